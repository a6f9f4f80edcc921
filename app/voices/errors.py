"""Why an enrolment sample is refused: raised where it is embedded (the engine, in the enrolment process)
and answered by the routes, so it lives apart from both."""

from __future__ import annotations


class SampleError(ValueError):
    """An enrolment sample that cannot be used; the message says why (a 422 for the client)."""
