"""marker: sets the DSCP of the IPv4 packets clients send (an example nsmd function).

    functions: [{name: marker, config: {dscp: 46}}]
"""

from __future__ import annotations

import dataclasses

from nsmd.errors import ValidationError
from nsmd.model import Connection
from nsmd.plugins.api import Function, VWireFunction


@dataclasses.dataclass
class Config:
    dscp: int = 0


class Marker(Function):
    name = "marker"
    Config = Config

    def check(self) -> None:
        if not 0 <= self.config.dscp <= 63:
            raise ValidationError(f"{self.where}.config.dscp", "a DSCP value 0-63",
                                  self.config.dscp)

    def attach(self, conn: Connection) -> VWireFunction:
        from nsmd_marker.stage import MarkerStage

        return MarkerStage(self.config.dscp)
