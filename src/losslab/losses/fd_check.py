"""The finite-difference check of a loss's derivatives (`python -m losslab.gradcheck` is its command).

A loss with a wrong backward (a hand-written autograd.Function, a dropped chain-rule term) still
trains, just towards the wrong optimum, so nothing downstream notices. This compares the gradient
w.r.t. y_pred with central finite differences in float64 at random points (and the Hessian from
double backward with finite differences of the gradient, where the loss claims
`twice_differentiable`), with and without per-sample weights. Points within `delta` of a
non-differentiable point are moved off it first: there a finite difference returns the average of
the two slopes whatever the code does. Kinks come from the loss's `kink_distance` when it has one,
and are otherwise found by comparing left and right one-sided differences.
Hand-written: torch.autograd.gradcheck fails at every kink of a piecewise loss and says nothing
about which point or which order went wrong.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from losslab.logs import one_line

LossFn = Callable[..., Tensor]

#: label domains targets can be drawn from (the `domain` a loss declares)
TARGETS = ("real", "pm1", "01", "classes")
#: classes when a multiclass loss does not pin K (`num_classes`); rows of its (N, K) logits are capped
#: at MAX_ROWS so the Hessian check stays a few hundred coordinates
DEFAULT_CLASSES = 3
MAX_ROWS = 2
DEFAULT_SHAPES: tuple[tuple[int, ...], ...] = ((16,), (8, 1), (4, 3))
#: one-sided differences that disagree by more than this fraction of the point's largest
#: derivative mean the stencil straddles a kink (smooth curvature gives only step * f'')
KINK_RTOL = 1e-3
#: rounding noise of a difference quotient, in units of eps * |value| / step
NOISE_FACTOR = 100.0
#: how often one point may be moved off kinks before it is checked as it is
MAX_MOVES = 8
F64 = torch.float64


class UserInputError(Exception):
    """Bad command-line input; main() prints it as one paragraph and exits 2."""


@dataclass
class CaseResult:
    """One row of the report: a kind of check (first/second order, weighted or not) over all points."""

    case: str
    points: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    passed: bool | None = None  # None: skipped, `note` says why
    worst: str = ""
    declared_moves: int = 0  # coordinates moved because kink_distance < delta
    detected_moves: int = 0  # coordinates moved because one-sided differences disagreed
    note: str = ""
    raised: bool = False  # the loss raised: the case stopped at the point `note` names

    @property
    def measured(self) -> bool:
        """Whether the error columns mean something: the case ran and was not cut short by a raise
        (the errors of the points before it would read like a pass)."""
        return self.passed is not None and not self.raised

    @property
    def status(self) -> str:
        return {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]


@dataclass
class Report:
    """All cases for one loss; `passed` is False as soon as one case fails."""

    loss: str
    rows: list[CaseResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(row.passed is not False for row in self.rows)

    def table(self) -> str:
        return format_table([self])

    def summary(self) -> str:
        """One line for an error message or a run tag: the verdict and each failed case's worst point."""
        ran = [r for r in self.rows if r.passed is not None]
        failed = [r for r in ran if r.passed is False]
        if not failed:
            return f"{self.loss}: {len(ran)} of {len(ran)} checks passed"
        details = "; ".join(
            f"{r.case}: {r.note}"
            if r.raised
            else f"{r.case}: {r.note or r.worst} (max abs err {r.max_abs:.2e})"
            for r in failed
        )
        return f"{self.loss}: {len(failed)} of {len(ran)} checks failed: {details}"


@dataclass
class _Settings:
    step: float
    delta: float
    atol: float
    rtol: float
    kink_aware: bool


@dataclass
class _PointResult:
    x: Tensor
    analytic: Tensor  # (m, n): m = 1 for the gradient, n for the Hessian
    fd: Tensor
    tol: Tensor
    declared: int
    detected: int
    unresolved: bool


# ---------------------------------------------------------------------------------------------
# the check itself


def check_loss(
    loss: LossFn,
    *,
    points: int = 32,
    shapes: Sequence[Sequence[int]] = DEFAULT_SHAPES,
    seed: int = 0,
    delta: float = 1e-3,
    step: float = 1e-6,
    atol: float = 1e-6,
    rtol: float = 1e-4,
    targets: str | None = None,
    pred_scale: float = 2.0,
    second_order: bool = True,
    weighted: bool = True,
    kink_aware: bool = True,
    inputs: Sequence[tuple[Tensor, Tensor]] | None = None,
    name: str | None = None,
) -> Report:
    """Check `loss(y_pred, y_true[, weight=w])`'s derivatives w.r.t. y_pred; the loss is not modified.

    A point passes when |autograd - fd| <= atol + rtol * |fd| + rounding noise for every entry.
    `targets` overrides the loss's declared `domain` (default: the domain, else "real").
    `inputs` replaces the random points with given (y_pred, y_true) pairs.
    """
    _validate(points, shapes, delta, step, atol, rtol, targets, pred_scale)
    label = name or getattr(loss, "name", None) or type(loss).__name__
    report = Report(loss=str(label))
    domain = getattr(loss, "domain", None)
    kind = targets or domain or "real"
    if kind not in TARGETS:
        raise ValueError(f"{label}: domain {kind!r} is not one of {', '.join(TARGETS)}.")
    if targets is None and domain is None:
        report.notes.append(f"{label} declares no `domain`: real targets (set gradcheck.targets to change).")
    model = _as_float64(loss)
    shapes = _pin_batch(model, shapes)
    if kind == "classes":  # (N, K) logits and (N,) integer labels
        k = getattr(loss, "num_classes", None) or DEFAULT_CLASSES
        shapes = [(min(s[0], MAX_ROWS), int(k)) for s in shapes]
    opts = _Settings(step=step, delta=delta, atol=atol, rtol=rtol, kink_aware=kink_aware)

    def sample(weights: bool) -> list[tuple[Tensor, Tensor, Tensor | None]]:
        return _sample(inputs, points, shapes, seed, kind, pred_scale, weights)

    claims = getattr(loss, "twice_differentiable", None)
    takes_weight = _accepts_weight(loss)
    with _single_thread():
        for order in (1, 2):
            for use_weight in (False, True):
                case = ("grad" if order == 1 else "hessian") + (", weighted" if use_weight else "")
                skip = _skip_reason(order, use_weight, claims, takes_weight, second_order, weighted)
                if skip:
                    report.rows.append(CaseResult(case=case, note=skip))
                    continue
                report.rows.append(_run_case(model, case, order, sample(use_weight), opts, seed))
    return report


def check_configured_loss(loss_module: LossFn) -> Report:
    """The check `check_grads=true` runs before training: check_loss with its defaults."""
    return check_loss(loss_module)


@contextmanager
def _single_thread() -> Iterator[None]:
    """Thousands of ops on 16-element tensors: thread fan-out only costs (100x on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _validate(
    points: int,
    shapes: Sequence[Sequence[int]],
    delta: float,
    step: float,
    atol: float,
    rtol: float,
    targets: str | None,
    pred_scale: float,
) -> None:
    if not isinstance(points, int) or isinstance(points, bool) or points < 1:
        raise ValueError(f"points must be an integer >= 1, got {points!r}.")
    if not shapes or not all(_is_shape(s) for s in shapes):
        raise ValueError(f"shapes must be a list of shapes like [[16], [4, 3]], got {shapes!r}.")
    for key, value in (("step", step), ("delta", delta), ("pred_scale", pred_scale)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{key} must be a finite number > 0, got {value!r}.")
    for key, value in (("atol", atol), ("rtol", rtol)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{key} must be a finite number >= 0, got {value!r}.")
    if delta <= 2 * step:
        raise ValueError(f"delta ({delta:g}) must exceed 2 * step ({step:g}), or moved points stay on kinks.")
    if targets is not None and targets not in TARGETS:
        raise ValueError(f"targets must be one of {', '.join(TARGETS)} (or null), got {targets!r}.")


def _is_shape(shape: object) -> bool:
    return (
        isinstance(shape, (list, tuple))
        and len(shape) >= 1
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)
    )


def _skip_reason(
    order: int, use_weight: bool, claims: bool | None, takes_weight: bool, second: bool, weighted: bool
) -> str:
    if order == 2 and claims is None:
        return "first order only: the loss does not declare twice_differentiable"
    if order == 2 and not claims:
        return "the loss declares twice_differentiable=False"
    if order == 2 and not second:
        return "disabled (gradcheck.second_order=false)"
    if use_weight and not takes_weight:
        return "the loss takes no `weight` argument"
    if use_weight and not weighted:
        return "disabled (gradcheck.weighted=false)"
    return ""


def _as_float64(loss: LossFn) -> LossFn:
    """A float64 CPU copy, so the caller's (training) module keeps its dtype and device."""
    if not isinstance(loss, nn.Module):
        return loss
    try:
        clone = copy.deepcopy(loss)
    except Exception:  # an uncopyable module is checked as it is rather than converted in place
        return loss
    return clone.to(device="cpu", dtype=F64)


def _pin_batch(loss: LossFn, shapes: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """Full-batch per-position weights (WeightedMSE's `weights`) fix the batch size of every shape."""
    pinned = getattr(loss, "weights", None)
    if isinstance(pinned, Tensor) and pinned.dim() == 1:
        return [(pinned.shape[0], *s[1:]) for s in shapes]
    return [tuple(s) for s in shapes]


def _accepts_weight(loss: LossFn) -> bool:
    fn = loss.forward if isinstance(loss, nn.Module) else loss
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "weight" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _sample_targets(kind: str, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    if kind == "classes":  # one class index per row of (N, K) logits
        return torch.randint(0, shape[1], (shape[0],), generator=gen)
    if kind == "real":
        return torch.randn(shape, generator=gen, dtype=F64)
    bits = torch.randint(0, 2, shape, generator=gen).to(F64)
    return 2 * bits - 1 if kind == "pm1" else bits


def _sample(
    inputs: Sequence[tuple[Tensor, Tensor]] | None,
    points: int,
    shapes: Sequence[tuple[int, ...]],
    seed: int,
    kind: str,
    pred_scale: float,
    weighted: bool,
) -> list[tuple[Tensor, Tensor, Tensor | None]]:
    """The same points for every case (same seed); weights are drawn from a separate stream."""
    gen = torch.Generator().manual_seed(seed)
    wgen = torch.Generator().manual_seed(seed + 1)
    if inputs is not None:
        pairs = [(torch.as_tensor(x).to(F64), _as_targets(torch.as_tensor(t), kind)) for x, t in inputs]
    else:
        pairs = []
        for i in range(points):
            shape = shapes[i % len(shapes)]
            pairs.append(
                (pred_scale * torch.randn(shape, generator=gen, dtype=F64), _sample_targets(kind, shape, gen))
            )
    out = []
    for x, t in pairs:
        w = 0.1 + 1.9 * torch.rand(x.shape[0], generator=wgen, dtype=F64) if weighted else None
        out.append((x, t, w))
    return out


def _as_targets(t: Tensor, kind: str) -> Tensor:
    """Given targets in float64, except class indices (domain `classes`), which stay integers."""
    return t if kind == "classes" else t.to(F64)


def _run_case(
    loss: LossFn,
    case: str,
    order: int,
    samples: list[tuple[Tensor, Tensor, Tensor | None]],
    opts: _Settings,
    seed: int,
) -> CaseResult:
    row = CaseResult(case=case, points=len(samples), passed=True)
    gen = torch.Generator().manual_seed(seed + 2)
    worst_ratio = -1.0
    unresolved = 0
    index, shape, weighted = 0, (), False
    try:
        for index, (x, t, w) in enumerate(samples):
            shape, weighted = tuple(x.shape), w is not None
            f = _objective(loss, t, w)
            res = _check_point(loss, f, x, t, order, opts, gen)
            err = (res.analytic - res.fd).abs()
            ratio = err / res.tol
            row.max_abs = max(row.max_abs, float(err.max()))
            row.max_rel = max(
                row.max_rel, float((err / res.fd.abs().clamp_min(max(opts.atol, 1e-300))).max())
            )
            row.declared_moves += res.declared
            row.detected_moves += res.detected
            unresolved += res.unresolved
            if float(ratio.max()) > 1.0:
                row.passed = False
            if float(ratio.max()) > worst_ratio:
                worst_ratio = float(ratio.max())
                flat = int(ratio.argmax())
                row.worst = _where(index, res.x, t, order, flat, res.analytic, res.fd)
    except Exception as exc:  # a loss that raises fails its check, with the point that raised
        where = f"point {index} shape {shape}" + (" with per-sample weights" if weighted else "")
        row.note = f"raised at {where}: {type(exc).__name__}: {one_line(str(exc))}"
        # the worst point so far is another point: keep it only where it failed by itself
        row.worst = f"earlier failure: {row.worst}" if row.passed is False and row.worst else ""
        row.passed, row.raised = False, True
    if unresolved:
        still = f"{unresolved} point(s) still on a kink after {MAX_MOVES} moves"
        row.note = f"{row.note}; {still}" if row.note else still
    return row


def _objective(loss: LossFn, t: Tensor, w: Tensor | None) -> Callable[[Tensor], Tensor]:
    def f(x: Tensor) -> Tensor:
        out = loss(x, t) if w is None else loss(x, t, weight=w)
        if not isinstance(out, Tensor) or out.numel() != 1:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise TypeError(f"the loss must return a 0-dim tensor, got {got}")
        return out.reshape(())

    return f


def _check_point(
    loss: LossFn,
    f: Callable[[Tensor], Tensor],
    x: Tensor,
    t: Tensor,
    order: int,
    opts: _Settings,
    gen: torch.Generator,
) -> _PointResult:
    """Move x off kinks (declared, then detected), then compare autograd with finite differences."""
    declared = 0
    if opts.kink_aware:
        x, declared = _move_off_declared(loss, x, t, opts.delta, gen)
    # Second order also looks for kinks of the loss itself: there the gradient jumps, and when
    # autograd returns the midpoint at the kink, the gradient's one-sided differences agree.
    phis: list[Callable[[Tensor], Tensor]] = [lambda z: _value(f, z)]
    if order == 2:
        phis = [*phis, lambda z: _grad(f, z)[1]] if opts.kink_aware else [lambda z: _grad(f, z)[1]]
    detected, unresolved = 0, True
    for _ in range(MAX_MOVES + 1):
        diffs = [_fd_jacobian(phi, x, opts.step) for phi in phis]
        fd, _, noise = diffs[-1]
        kinks = torch.stack([_kinks(*d) for d in diffs]).any(dim=0)
        if not opts.kink_aware or not bool(kinks.any()):
            unresolved = False
            break
        x = _shift(x, kinks, opts.delta, gen)
        detected += int(kinks.sum())
    analytic = _grad(f, x)[1].reshape(1, -1) if order == 1 else _hessian(f, x)
    tol = opts.atol + opts.rtol * fd.abs() + noise
    return _PointResult(x, analytic, fd, tol, declared, detected, unresolved)


def _kinks(fd: Tensor, jumps: Tensor, noise: float) -> Tensor:
    """Coordinates whose one-sided differences disagree far beyond smooth curvature and rounding."""
    return jumps > max(KINK_RTOL * float(fd.abs().max()), noise)


def _move_off_declared(
    loss: LossFn, x: Tensor, t: Tensor, delta: float, gen: torch.Generator
) -> tuple[Tensor, int]:
    kink_distance = getattr(loss, "kink_distance", None)
    if not callable(kink_distance):
        return x, 0
    moved = 0
    for _ in range(MAX_MOVES):
        with torch.no_grad():
            dist = kink_distance(x, t)
        if dist is None:
            return x, moved
        near = torch.broadcast_to(torch.as_tensor(dist), x.shape).reshape(-1) < delta
        if not bool(near.any()):
            break
        x = _shift(x, near, delta, gen)
        moved += int(near.sum())
    return x, moved


def _shift(x: Tensor, mask: Tensor, delta: float, gen: torch.Generator) -> Tensor:
    """Move the masked coordinates by 2..4 delta in a random direction (a kink is a set of measure 0)."""
    flat = x.detach().reshape(-1).clone()
    size = 2 * delta * (1 + torch.rand(flat.shape, generator=gen, dtype=F64))
    sign = torch.where(torch.rand(flat.shape, generator=gen) < 0.5, -1.0, 1.0).to(F64)
    flat = torch.where(mask, flat + sign * size, flat)
    return flat.reshape(x.shape)


def _value(f: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    with torch.no_grad():
        return f(x).detach()


def _grad(f: Callable[[Tensor], Tensor], x: Tensor, create_graph: bool = False) -> tuple[Tensor, Tensor]:
    x = x.detach().requires_grad_(True)
    out = f(x)
    if not out.requires_grad:  # the loss ignores y_pred (or detached it): autograd says zero
        return x, torch.zeros_like(x)
    (g,) = torch.autograd.grad(out, x, create_graph=create_graph, allow_unused=True)
    return x, (torch.zeros_like(x) if g is None else g)


def _hessian(f: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Rows d(grad_i)/dx by double backward; a gradient without a graph means a zero Hessian."""
    x, g = _grad(f, x, create_graph=True)
    g = g.reshape(-1)
    n = g.numel()
    if not g.requires_grad:
        return torch.zeros(n, n, dtype=F64)
    rows = []
    for i in range(n):
        (row,) = torch.autograd.grad(g[i], x, retain_graph=True, allow_unused=True)
        rows.append(torch.zeros(n, dtype=F64) if row is None else row.reshape(-1).to(F64))
    return torch.stack(rows)


def _fd_jacobian(phi: Callable[[Tensor], Tensor], x: Tensor, step: float) -> tuple[Tensor, Tensor, float]:
    """Central-difference Jacobian (m, n) of phi, per-column one-sided disagreement, and rounding noise.

    For smooth phi the two one-sided differences differ by about step * phi''; across a kink
    they differ by the jump in slope, however small the step.
    """
    flat = x.detach().reshape(-1)
    p0 = phi(x).reshape(-1).to(F64)
    mag = float(p0.abs().max())
    cols, jumps = [], []
    for j in range(flat.numel()):
        xp, xm = flat.clone(), flat.clone()
        xp[j] += step
        xm[j] -= step
        pp = phi(xp.reshape(x.shape)).reshape(-1).to(F64)
        pm = phi(xm.reshape(x.shape)).reshape(-1).to(F64)
        hp, hm = float(xp[j] - flat[j]), float(flat[j] - xm[j])  # the steps actually taken
        cols.append((pp - pm) / (hp + hm))
        jumps.append(float(((pp - p0) / hp - (p0 - pm) / hm).abs().max()))
        mag = max(mag, float(pp.abs().max()), float(pm.abs().max()))
    noise = NOISE_FACTOR * torch.finfo(F64).eps * mag / step
    return torch.stack(cols, dim=1), torch.tensor(jumps, dtype=F64), noise


def _where(index: int, x: Tensor, t: Tensor, order: int, flat: int, analytic: Tensor, fd: Tensor) -> str:
    """Where the largest error (relative to its tolerance) sits, in terms a user can reproduce."""
    n = x.numel()
    row, col = divmod(flat, n)

    def pos(k: int) -> str:
        return "[" + ", ".join(str(int(i)) for i in torch.unravel_index(torch.tensor(k), x.shape)) + "]"

    xs, ts = x.detach().reshape(-1), t.reshape(-1)
    if ts.numel() != xs.numel() and x.dim() == 2 and ts.numel() == x.shape[0]:  # class index per row
        ts = ts.repeat_interleave(x.shape[1])
    what = f"d/dy_pred{pos(col)}" if order == 1 else f"d2/dy_pred{pos(row)}dy_pred{pos(col)}"
    auto, num = float(analytic[row, col]), float(fd[row, col])
    return (
        f"point {index} shape {tuple(x.shape)}: {what} at y_pred={float(xs[col]):.4g} "
        f"y_true={float(ts[col]):.4g}: autograd {auto:.6g} vs fd {num:.6g}"
    )


# ---------------------------------------------------------------------------------------------
# report


def format_table(reports: Sequence[Report]) -> str:
    """A plain-text table, one row per case, then what the columns mean and a one-line verdict."""
    head = ("loss", "case", "points", "max abs err", "max rel err", "moves", "result", "worst point / note")
    lines = [head]
    for rep in reports:
        for r in rep.rows:
            ran, measured = r.passed is not None, r.measured
            lines.append(
                (
                    rep.loss,
                    r.case,
                    str(r.points) if ran else "-",
                    f"{r.max_abs:.2e}" if measured else "-",
                    f"{r.max_rel:.2e}" if measured else "-",
                    f"{r.declared_moves}+{r.detected_moves}" if measured else "-",
                    r.status,
                    "; ".join(s for s in (r.note, r.worst) if s),
                )
            )
    widths = [max(len(row[i]) for row in lines) for i in range(len(head) - 1)]
    right = {2, 3, 4, 5}
    out = []
    for row in lines:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=False))
        ]
        out.append("  ".join([*cells, row[-1]]).rstrip())
    out.insert(1, "-" * len(out[0]))
    for rep in reports:
        out.extend(f"note: {n}" for n in rep.notes)
    rows = [r for rep in reports for r in rep.rows if r.passed is not None]
    failed = [f"{rep.loss} ({r.case})" for rep in reports for r in rep.rows if r.passed is False]
    out.append(
        "moves: coordinates moved off a non-differentiable point, declared by kink_distance + "
        "detected by one-sided differences."
    )
    verdict = f"{len(rows) - len(failed)} of {len(rows)} checks passed"
    out.append(verdict + (f"; FAILED: {', '.join(failed)}" if failed else "."))
    return "\n".join(out)
