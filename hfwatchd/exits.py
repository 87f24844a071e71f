"""Exit codes (sysexits.h where one fits) and the usage error; each exception carries its own code."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0  # everything expected is present and matched
    MISMATCH = 1  # at least one file must be downloaded again
    INCOMPLETE = 2  # no mismatch, but files missing or incomplete
    USAGE = 64  # EX_USAGE: bad command line
    UNAVAILABLE = 69  # EX_UNAVAILABLE: the Hub is unreachable and nothing is cached
    IOERR = 74  # EX_IOERR: the state store cannot be read
    TEMPFAIL = 75  # EX_TEMPFAIL: another daemon holds this state_dir (systemd retries)
    CONFIG = 78  # EX_CONFIG: bad configuration (the unit's RestartPreventExitStatus)
    INTERRUPTED = 130


class UsageError(Exception):
    """Bad command line: the message says what to type instead."""

    exit_code = ExitCode.USAGE
