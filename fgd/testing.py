"""Assertions for the user's own test suites (pytest or unittest).

    def test_my_gradient():
        fgd.testing.assert_grad_matches(loss, params, X, Y, grad=my_grad)

Each raises AssertionError whose message is the check's table (which leaf,
which comparison, the worst entry, a hint), and returns the report when the
gradient matches. The checks run in float64 whatever the inputs' precision.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from fgd.gradcheck import check_grad, check_vjp
from fgd.gradreport import GradCheckReport

__all__ = ["assert_grad_matches", "assert_vjp_matches"]


def _fail(report: GradCheckReport, msg: Optional[str]) -> None:
    head = f"{msg}\n" if msg else ""
    raise AssertionError(f"{head}hand-derived {report.title} disagrees at {report.first_failure}\n{report}")


def assert_grad_matches(loss: Callable, params: Any, *data: Any, grad: Callable, seed: int = 0,
                        fd_entries: Optional[int] = None, msg: Optional[str] = None) -> GradCheckReport:
    """`fgd.check_grad(loss, params, *data, grad=grad)`, raising AssertionError unless ok.

    Args:
      loss, params, *data, grad, seed, fd_entries: as for `fgd.check_grad`.
      msg: a first line for the AssertionError.

    Returns:
      The GradCheckReport (ok).
    """
    __tracebackhide__ = True  # pytest shows the caller's line
    report = check_grad(loss, params, *data, grad=grad, seed=seed, fd_entries=fd_entries)
    if not report.ok:
        _fail(report, msg)
    return report


def assert_vjp_matches(f: Callable, f_backward: Callable, *inputs: Any, seed: int = 0,
                       msg: Optional[str] = None) -> GradCheckReport:
    """`fgd.check_vjp(f, f_backward, *inputs)`, raising AssertionError unless ok."""
    __tracebackhide__ = True
    report = check_vjp(f, f_backward, *inputs, seed=seed)
    if not report.ok:
        _fail(report, msg)
    return report
