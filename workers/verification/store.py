"""What the verification workers read and write in PostgreSQL (database/sql/verification.sql).

Every state change is guarded by the state it leaves (`pending` → …), and a
funnel counter moves in the same statement only when the row did change.
So a job done twice (a worker killed after the change, before the XACK)
changes nothing the second time and counts nothing twice, and the funnel
stays equal to the table. The batch statements are run by
workers/verification/email.py and nik.py; the door's link is
database/verify_email.py.
"""

from __future__ import annotations

from typing import Final, Literal

from database.queries import load

QUERIES: Final = load("verification.sql")

NikOutcome = Literal["verified", "mismatch", "not_found", "failed"]
