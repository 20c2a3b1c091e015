"""``make soak``: the model-based sync test (:mod:`tests.sync.sync_model`) for minutes.

Runs the state machine against one sandbox, a few examples at a time, until
``LEADRELAY_SOAK_SECONDS`` (default 300) have passed, then prints how many operations and syncs
it checked. A failure prints its steps (hypothesis's report) and exits 1.

    LEADRELAY_SOAK_SECONDS=900 make soak
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from hypothesis.stateful import run_state_machine_as_test

from leadrelay.connectors.policy import LOGGER_NAME
from leadrelay.sandbox.server import SandboxServer
from tests.sync.sync_model import TOTALS, PropagatingSyncMachine, TwoWaySyncMachine, stories

#: Longer stories than the bounded test's, two per round: the last round may end past the
#: deadline by one round (a minute at most on a busy machine).
SOAK = stories(examples=2, steps=20)


def _seconds() -> float:
    text = os.environ.get("LEADRELAY_SOAK_SECONDS", "300")
    try:
        seconds = float(text)
    except ValueError:
        raise SystemExit(
            f"LEADRELAY_SOAK_SECONDS must be a number of seconds, not {text!r}"
        ) from None
    if seconds <= 0:
        raise SystemExit(f"LEADRELAY_SOAK_SECONDS must be positive, not {text!r}")
    return seconds


def _summary(elapsed: float, rounds: int) -> str:
    return (
        f"soak: {elapsed:.0f} s, {rounds} rounds of {SOAK.max_examples} examples; "
        f"{TOTALS['operations']} operations ({TOTALS['contacts created']} contacts and "
        f"{TOTALS['CRM leads created']} CRM leads created, "
        f"{TOTALS['fields edited']} fields and {TOTALS['contacts edited']} converted Contacts "
        f"edited, {TOTALS['verdicts']} verdicts, "
        f"{TOTALS['records deleted']} records deleted, {TOTALS['contacts merged']} HubSpot and "
        f"{TOTALS['zoho merges']} Zoho merges, {TOTALS['conversions']} conversions); "
        f"{TOTALS['syncs']} syncs "
        f"({TOTALS['checked syncs']} quiet syncs checked against the model, "
        f"{TOTALS['killed syncs']} killed mid-run); {TOTALS['conflicts']} conflicts"
    )


def main() -> int:
    """Run the soak; 0 when every check held."""
    seconds = _seconds()
    # HubSpot's search limit (5 a second) makes the connector wait and log; expected here.
    logging.getLogger(LOGGER_NAME).setLevel(logging.ERROR)
    started = time.monotonic()
    rounds = 0
    with tempfile.TemporaryDirectory() as tmp, SandboxServer(ca_dir=Path(tmp) / "ca") as sandbox:
        machines: list[type[TwoWaySyncMachine]] = []
        for base in (TwoWaySyncMachine, PropagatingSyncMachine):

            class Machine(base):  # type: ignore[valid-type,misc]
                pass

            Machine.sandbox = sandbox
            Machine.workdir = Path(tmp)
            machines.append(Machine)
        try:
            while time.monotonic() - started < seconds:
                # keep and propagate in turn
                run_state_machine_as_test(machines[rounds % 2], settings=SOAK)
                rounds += 1
        except Exception:
            print(_summary(time.monotonic() - started, rounds), file=sys.stderr)
            raise
    print(_summary(time.monotonic() - started, rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
