"""A SPIFFE Workload API server for tests: serves X.509 SVIDs from a development CA over a
unix socket and pushes a new SVID on rotate(), as a SPIRE agent would."""

from __future__ import annotations

import datetime as dt
import os
import threading
from concurrent import futures

import grpc
from cryptography.hazmat.primitives import serialization
from spiffe._proto import workload_pb2, workload_pb2_grpc

from nsmd.identity.ca import issue_svid
from nsmd.identity.svid import load_svid_dir


class _Servicer(workload_pb2_grpc.SpiffeWorkloadAPIServicer):
    def __init__(self, server: WorkloadApiServer):
        self.server = server

    def FetchX509SVID(self, request, context):  # noqa: N802 (gRPC's name)
        seen = -1
        while context.is_active():
            with self.server.changed:
                if self.server.version == seen:
                    self.server.changed.wait(0.2)
                    continue
                seen = self.server.version
                response = self.server.response
            yield response

    def FetchX509Bundles(self, request, context):  # noqa: N802
        yield workload_pb2.X509BundlesResponse(bundles={
            self.server.trust_domain: self.server.response.svids[0].bundle,
            **self.server.response.federated_bundles})


class WorkloadApiServer:
    """serve(ca_state, spiffe_id, socket_path); rotate() issues and pushes a new SVID."""

    def __init__(self, ca_state: str, spiffe_id: str, socket_path: str, work_dir: str,
                 lifetime: dt.timedelta = dt.timedelta(hours=1)):
        self.ca_state = ca_state
        self.spiffe_id = spiffe_id
        self.trust_domain = spiffe_id.split("/")[2]
        self.socket_path = socket_path
        self.work_dir = work_dir
        self.lifetime = lifetime
        self.version = 0
        self.federated: dict[str, list] = {}  # trust domain -> its CA certificates
        self.changed = threading.Condition()
        self.response = self._issue()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        workload_pb2_grpc.add_SpiffeWorkloadAPIServicer_to_server(_Servicer(self), self._server)
        self._server.add_insecure_port(f"unix://{socket_path}")

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> WorkloadApiServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=0.5)

    def federate(self, trust_domain: str, cas: list) -> None:
        """Adds another trust domain's bundle to the pushed SVID responses."""
        self.federated[trust_domain] = cas
        self.rotate()

    def rotate(self) -> None:
        response = self._issue()
        with self.changed:
            self.response = response
            self.version += 1
            self.changed.notify_all()

    def _issue(self) -> workload_pb2.X509SVIDResponse:
        out = issue_svid(self.ca_state, self.spiffe_id,
                         os.path.join(self.work_dir, f"wl-{self.version}"), self.lifetime)
        svid = load_svid_dir(out)
        der = serialization.Encoding.DER
        return workload_pb2.X509SVIDResponse(svids=[workload_pb2.X509SVID(
            spiffe_id=self.spiffe_id,
            x509_svid=b"".join(c.public_bytes(der) for c in svid.chain),
            x509_svid_key=svid.key.private_bytes(der, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()),
            bundle=b"".join(c.public_bytes(der) for c in svid.bundle))],
            federated_bundles={td: b"".join(c.public_bytes(der) for c in cas)
                               for td, cas in self.federated.items()})
