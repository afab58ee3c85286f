"""Logs: JSON lines with the structured fields, and the level switched at run time."""

import json
import logging

from nsmd import logs


def test_json_lines_carry_the_structured_fields():
    record = logging.LogRecord("nsmd.audit", logging.WARNING, __file__, 1, "%s refused", ("x",),
                               None)
    record.policy, record.subject = "default", "unix:uid=1000"
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == "x refused" and line["level"] == "warning"
    assert (line["policy"], line["subject"], line["logger"]) == ("default", "unix:uid=1000",
                                                                 "nsmd.audit")
    assert "quota" not in line


def test_sigusr1_switches_to_debug_and_back():
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        logs.setup("info", "json")
        logs.toggle_debug()
        assert root.level == logging.DEBUG
        assert logging.getLogger("asyncio").level == logging.INFO   # others stay quiet
        logs.toggle_debug()
        assert root.level == logging.INFO
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers
