"""Direct frequency response of a 2-D truss: solve (K + iωC − ω²M) x = P(ω) b at many ω.

The model: pin-jointed bars, two displacements per node, lumped mass, stiffness-proportional
damping C = ``damping`` K, supports where x is smallest, a unit load ``b`` on one node.
Meshes come from :func:`structured_mesh` (any size) or :func:`read_triangle` (Triangle's
``.node``/``.ele`` files; every triangle edge becomes a bar).

The matrix is complex symmetric with the same sparsity at every frequency. :class:`Pattern`
holds that sparsity once (the full matrix for SciPy, its upper triangle for PARDISO) with
K, C and M aligned to it, so a frequency only updates values: ``Kv + iωCv − ω²Mv``.

Solvers, chosen on measurements here (FACTS.md, "Numerical kernels"):

* ``pardiso``: MKL PARDISO in complex symmetric mode (mtype 6) through ``ctypes``, the ordering
  and symbolic analysis done once per worker and model, a numeric factorisation per frequency:
  4.6-6.9x faster than ``spsolve``. MKL comes from PyPI (the ``mkl`` wheel puts
  ``libmkl_rt.so`` in the environment's ``lib``); ``HPCBRIDGE_MKL_RT`` names another library.
* ``superlu``: SciPy's SuperLU with ``MMD_AT_PLUS_A`` ordering and ``SymmetricMode``: 1.3-1.7x,
  always there. ``auto`` takes ``pardiso`` when MKL loads and falls back to this otherwise.
* ``spsolve``: plain ``scipy.sparse.linalg.spsolve``, the baseline.
"""

from __future__ import annotations

import ctypes
import dataclasses
import glob
import math
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from hpcbridge.client.bridge import Bridge

SOLVERS = ("auto", "reuse", "pardiso", "superlu", "spsolve")


# --- meshes ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mesh:
    """Nodes (n x 2 coordinates), bars (m x 2 node indices), supported nodes, the loaded node."""

    nodes: np.ndarray
    bars: np.ndarray
    fixed: np.ndarray
    load_node: int
    load_direction: int = 1  # 0: x, 1: y
    first: int = 0  # the number of the first node in the mesh's own file (Triangle writes 0 or 1)
    output_nodes: tuple[int, ...] = ()  # where to read the response (indices from 0); () = the loaded node

    @property
    def free_dofs(self) -> int:
        return 2 * (len(self.nodes) - len(self.fixed))


def structured_mesh(nx: int, ny: int, spacing: float = 1.0) -> Mesh:
    """A cantilever of ``nx`` x ``ny`` square cells, each with its four sides and both diagonals.

    Nodes at x = 0 are supported; the load acts in +y at the top right node.
    ``2 * nx * (ny + 1)`` free displacements: 60 x 60 gives 7320, 273 x 273 gives 149604.
    """
    if nx < 1 or ny < 1:
        raise ValueError(f"a mesh needs at least one cell each way, not {nx} x {ny}")
    ids = np.arange((nx + 1) * (ny + 1)).reshape(nx + 1, ny + 1)  # ids[i, j]: node at (i, j)
    xs, ys = np.meshgrid(np.arange(nx + 1) * spacing, np.arange(ny + 1) * spacing, indexing="ij")
    nodes = np.column_stack([xs.ravel(), ys.ravel()])
    bars = np.concatenate([
        np.column_stack([ids[:-1, :].ravel(), ids[1:, :].ravel()]),      # along x
        np.column_stack([ids[:, :-1].ravel(), ids[:, 1:].ravel()]),      # along y
        np.column_stack([ids[:-1, :-1].ravel(), ids[1:, 1:].ravel()]),   # diagonals /
        np.column_stack([ids[1:, :-1].ravel(), ids[:-1, 1:].ravel()]),   # diagonals \
    ])
    return Mesh(nodes, bars, fixed=ids[0, :].copy(), load_node=int(ids[nx, ny]))


def _data_lines(path: Path) -> list[list[str]]:
    lines = []
    for raw in Path(path).read_text().splitlines():
        words = raw.split("#", 1)[0].split()
        if words:
            lines.append(words)
    return lines


def read_triangle(base: str | os.PathLike[str]) -> Mesh:
    """Read Triangle's ``base.node`` and ``base.ele``; each triangle edge becomes one bar.

    Either numbering (from 0 or from 1) is accepted, as Triangle writes both; ``#`` starts a
    comment. Nodes with the smallest x are supported; the load is on the node with the largest
    x (the largest y among ties), in +y.
    """
    base = str(base)
    for suffix in (".node", ".ele"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    for suffix in (".node", ".ele"):
        if not Path(base + suffix).is_file():
            raise MeshError(f"no Triangle file {base + suffix}: a mesh is BASE.node and BASE.ele "
                            f"(the meshes shipped with hpcbridge: {', '.join(shipped_meshes()) or 'none'})")
    node_lines = _data_lines(Path(base + ".node"))
    count, dim, attributes, markers = (int(w) for w in node_lines[0][:4])
    if dim != 2:
        raise ValueError(f"{base}.node: dimension {dim}, only 2-D meshes are supported")
    if count < 1 or len(node_lines) - 1 < count:
        raise ValueError(f"{base}.node: header says {count} nodes, file has {len(node_lines) - 1}")
    rows = node_lines[1: 1 + count]
    first = int(rows[0][0])
    index = np.array([int(r[0]) for r in rows]) - first
    nodes = np.empty((count, 2))
    nodes[index] = [(float(r[1]), float(r[2])) for r in rows]

    ele_lines = _data_lines(Path(base + ".ele"))
    triangles, corners_per = int(ele_lines[0][0]), int(ele_lines[0][1])
    if corners_per not in (3, 6):
        raise ValueError(f"{base}.ele: {corners_per} nodes per triangle, expected 3 or 6")
    corners = np.array([[int(w) for w in r[1:4]] for r in ele_lines[1: 1 + triangles]]) - first
    if corners.size == 0 or corners.min() < 0 or corners.max() >= count:
        raise ValueError(f"{base}.ele: node numbers outside 0..{count - 1} (after numbering from {first})")
    edges = np.concatenate([corners[:, [0, 1]], corners[:, [1, 2]], corners[:, [2, 0]]])
    bars = np.unique(np.sort(edges, axis=1), axis=0)

    span = np.ptp(nodes[:, 0]) or 1.0
    fixed = np.flatnonzero(nodes[:, 0] <= nodes[:, 0].min() + 1e-9 * span)
    load = np.lexsort((nodes[:, 1], nodes[:, 0]))[-1]
    return Mesh(nodes, bars, fixed=fixed, load_node=int(load), first=first)


def with_output_nodes(mesh: Mesh, numbers: list[int]) -> Mesh:
    """The mesh whose response is read at these nodes, numbered as in its file (``mesh.first`` up).

    The displacement read is the one in the load's direction. A number outside the mesh or a
    supported node (its displacement is zero by definition) is a :class:`MeshError`.
    """
    last = mesh.first + len(mesh.nodes) - 1
    fixed = set(int(k) for k in mesh.fixed)
    for number in numbers:
        if not mesh.first <= number <= last:
            raise MeshError(f"output node {number}: the mesh's nodes are numbered {mesh.first}..{last}")
        if number - mesh.first in fixed:
            raise MeshError(f"output node {number} is supported: its displacement is always 0")
    return dataclasses.replace(mesh, output_nodes=tuple(number - mesh.first for number in numbers))


class MeshError(ValueError):
    """A mesh or model file is missing or unreadable; the message names the file."""


MESH_FOLDER = Path(__file__).resolve().parent / "meshes"


def shipped_meshes() -> list[str]:
    """Names of the small Triangle meshes that ship with hpcbridge (``--mesh plate``)."""
    return sorted(path.stem for path in MESH_FOLDER.glob("*.node") if path.with_suffix(".ele").is_file())


def find_mesh(name: str | os.PathLike[str]) -> str:
    """``name`` as given when its files exist there, else the shipped mesh of that name, else ``name``."""
    base = str(name)
    for suffix in (".node", ".ele"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    if Path(base + ".node").is_file() or os.sep in base:
        return base
    shipped = MESH_FOLDER / base
    return str(shipped) if shipped.with_suffix(".node").is_file() else base


def plate_with_hole(length: float = 4.0, width: float = 1.0, hole: float = 0.25, spacing: float = 0.05,
                    seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """An unstructured triangulation (Delaunay of jittered points) of a plate with a round hole.

    The generator of the shipped ``plate`` mesh; ``spacing`` 0.05 gives about 1,700 nodes.
    """
    from scipy.spatial import Delaunay

    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.arange(0, length + spacing / 2, spacing), np.arange(0, width + spacing / 2, spacing))
    points = np.column_stack([xs.ravel(), ys.ravel()])
    inner = (points[:, 0] > 0) & (points[:, 0] < length) & (points[:, 1] > 0) & (points[:, 1] < width)
    points[inner] += rng.uniform(-0.3, 0.3, (int(inner.sum()), 2)) * spacing
    centre = np.array([length / 2, width / 2])
    angles = np.linspace(0, 2 * np.pi, max(12, int(2 * np.pi * hole / spacing)), endpoint=False)
    rim = centre + hole * np.column_stack([np.cos(angles), np.sin(angles)])
    points = np.vstack([points[np.hypot(*(points - centre).T) > hole + 0.4 * spacing], rim])
    triangles = Delaunay(points).simplices
    centroids = points[triangles].mean(axis=1)
    triangles = triangles[np.hypot(*(centroids - centre).T) > hole]
    used = np.unique(triangles)
    renumber = np.full(len(points), -1)
    renumber[used] = np.arange(len(used))
    return points[used], renumber[triangles]


def structured_triangles(nx: int, ny: int, spacing: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and triangles of an ``nx`` x ``ny`` grid of cells, each cut along its / diagonal."""
    ids = np.arange((nx + 1) * (ny + 1)).reshape(nx + 1, ny + 1)
    xs, ys = np.meshgrid(np.arange(nx + 1) * spacing, np.arange(ny + 1) * spacing, indexing="ij")
    a, b, c, d = ids[:-1, :-1].ravel(), ids[1:, :-1].ravel(), ids[1:, 1:].ravel(), ids[:-1, 1:].ravel()
    triangles = np.concatenate([np.column_stack([a, b, c]), np.column_stack([a, c, d])])
    return np.column_stack([xs.ravel(), ys.ravel()]), triangles


def write_triangle(nodes: np.ndarray, triangles: np.ndarray, base: str | os.PathLike[str], first: int = 1) -> None:
    """Write ``base.node`` and ``base.ele`` as Triangle does, numbered from ``first``."""
    with open(f"{base}.node", "w") as out:
        out.write(f"# {len(nodes)} nodes, written by hpcbridge\n{len(nodes)} 2 0 0\n")
        for i, (x, y) in enumerate(nodes):
            out.write(f"{i + first} {float(x)!r} {float(y)!r}\n")
    with open(f"{base}.ele", "w") as out:
        out.write(f"{len(triangles)} 3 0\n")
        for i, (p, q, r) in enumerate(triangles):
            out.write(f"{i + first} {p + first} {q + first} {r + first}\n")


# --- the model ------------------------------------------------------------------------------

@dataclass
class Model:
    """K, C, M over the free displacements, the load vector b, and where to read the response."""

    K: object
    C: object
    M: object
    b: np.ndarray
    outputs: np.ndarray
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    first_dof: int = 0  # how the model's file numbers DOFs (1 in MATLAB's .mat): outputs are named so

    def dof_name(self, index: int) -> int:
        """The number of the DOF at 0-based ``index``, as the user's model file counts."""
        return int(index) + self.first_dof

    @property
    def size(self) -> int:
        return self.K.shape[0]


def assemble(mesh: Mesh, youngs: float = 210e9, area: float = 1e-4, density: float = 7850.0,
             damping: float = 0.004) -> Model:
    """Stiffness, mass (lumped: half of each bar at each end) and damping ``C = damping * K``."""
    import scipy.sparse as sp

    start, end = mesh.nodes[mesh.bars[:, 0]], mesh.nodes[mesh.bars[:, 1]]
    delta = end - start
    length = np.hypot(delta[:, 0], delta[:, 1])
    if np.any(length <= 0):
        raise ValueError("the mesh has a bar of zero length")
    c, s = delta[:, 0] / length, delta[:, 1] / length
    direction = np.column_stack([-c, -s, c, s])  # the bar's axial strain from its 4 end displacements
    local = (youngs * area / length)[:, None, None] * direction[:, :, None] * direction[:, None, :]
    dofs = np.column_stack([2 * mesh.bars[:, 0], 2 * mesh.bars[:, 0] + 1, 2 * mesh.bars[:, 1], 2 * mesh.bars[:, 1] + 1])
    total = 2 * len(mesh.nodes)
    K = sp.coo_matrix((local.ravel(), (np.repeat(dofs, 4, axis=1).ravel(), np.tile(dofs, (1, 4)).ravel())),
                      shape=(total, total)).tocsr()
    node_mass = np.bincount(mesh.bars.ravel(), weights=np.repeat(density * area * length / 2, 2), minlength=len(mesh.nodes))
    mass = np.repeat(node_mass, 2)

    keep = np.ones(total, bool)
    keep[2 * mesh.fixed] = keep[2 * mesh.fixed + 1] = False
    free = np.flatnonzero(keep)
    position = np.full(total, -1)
    position[free] = np.arange(len(free))
    K = K[free][:, free].tocsr()
    K.sum_duplicates()
    K.sort_indices()
    M = sp.diags(mass[free]).tocsr()
    load_dof = position[2 * mesh.load_node + mesh.load_direction]
    if load_dof < 0:
        raise ValueError("the load acts on a supported node")
    b = np.zeros(len(free))
    b[load_dof] = 1.0
    outputs = (position[2 * np.asarray(mesh.output_nodes, np.int64) + mesh.load_direction] if mesh.output_nodes
               else np.array([load_dof]))
    if np.any(outputs < 0):
        raise ValueError("an output node is supported")
    return Model(K=K, C=(damping * K).tocsr(), M=M, b=b, outputs=outputs)


def first_frequency_estimate(model: Model, iterations: int = 4) -> float:
    """ω₁ by inverse iteration from the static deflection (one factorisation of K, a few solves).

    Each step's Rayleigh quotient xᵀKx / xᵀMx is an upper bound on ω₁² that converges to it.
    """
    from scipy.sparse.linalg import splu

    solve = splu(model.K.tocsc()).solve
    x = solve(model.b)
    for _ in range(iterations):
        x = solve(model.M @ x)
        x /= np.linalg.norm(x)
    return math.sqrt(float(x @ (model.K @ x)) / float(x @ (model.M @ x)))


class Pattern:
    """The sparsity of K + iωC − ω²M, once: full (CSR) and upper triangle, with K, C, M aligned."""

    def __init__(self, model: Model) -> None:
        import scipy.sparse as sp

        n = model.size
        union = (abs(model.K) + abs(model.C) + abs(model.M) + sp.identity(n, format="csr")).tocsr()
        union.sort_indices()
        self.n = n
        self.indptr, self.indices = union.indptr.astype(np.int32), union.indices.astype(np.int32)
        self.full = [self._align(union, m) for m in (model.K, model.C, model.M)]
        upper = sp.triu(union, format="csr")
        upper.sort_indices()
        self.upper_indptr, self.upper_indices = upper.indptr.astype(np.int32), upper.indices.astype(np.int32)
        self.upper = [self._align(upper, sp.triu(m, format="csr")) for m in (model.K, model.C, model.M)]
        self._last: tuple[float, Any] | None = None  # the last ω's matrix (see matrix)

    @staticmethod
    def _align(pattern, matrix) -> np.ndarray:
        """The values of ``matrix`` at the positions of ``pattern`` (zero where it has none)."""
        coo = matrix.tocoo()
        rows = np.repeat(np.arange(pattern.shape[0], dtype=np.int64), np.diff(pattern.indptr))
        keys = rows * pattern.shape[1] + pattern.indices
        where = np.searchsorted(keys, coo.row.astype(np.int64) * pattern.shape[1] + coo.col)
        values = np.zeros(len(keys))
        np.add.at(values, where, coo.data)
        return values

    def values(self, omega: float, upper: bool = False) -> np.ndarray:
        k, c, m = self.upper if upper else self.full
        return k + (1j * omega) * c - (omega * omega) * m

    def matrix(self, omega: float):
        """K + iωC − ω²M as a SciPy CSR matrix (treat it as read-only).

        The last ω's matrix is kept: a solve, its solver's residual check and the reported
        residual ask for the same one (5 ms to build at 40k unknowns, a product 0.7 ms).
        """
        import scipy.sparse as sp

        if self._last is None or self._last[0] != omega:
            self._last = (omega, sp.csr_matrix((self.values(omega), self.indices, self.indptr), shape=(self.n, self.n)))
        return self._last[1]


# --- solvers --------------------------------------------------------------------------------

def _mkl_candidates() -> list[str]:
    named = os.environ.get("HPCBRIDGE_MKL_RT")
    if named:
        return [named]
    found = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")), reverse=True)
    return found + ["libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so"]


@cache
def _mkl() -> ctypes.CDLL | None:
    for candidate in _mkl_candidates():
        try:
            library = ctypes.CDLL(candidate)
            library.pardiso  # noqa: B018 - the symbol must be there
            return library
        except (OSError, AttributeError):
            continue
    return None


def pardiso_available() -> bool:
    """Whether MKL PARDISO can be loaded here (on a worker, ask there)."""
    return _mkl() is not None


def resolve_solver(name: str) -> str:
    """``auto`` becomes ``pardiso`` when MKL loads, ``superlu`` otherwise; others are checked."""
    if name not in SOLVERS:
        raise ValueError(f"solver {name!r}: choose one of {', '.join(SOLVERS)}")
    if name == "auto":
        return "pardiso" if pardiso_available() else "superlu"
    if name == "pardiso" and not pardiso_available():
        raise RuntimeError("MKL PARDISO is not loadable here: pip install mkl, or set HPCBRIDGE_MKL_RT "
                           "to a libmkl_rt.so; or choose --solver superlu")
    return name


class PardisoSolver:
    """MKL PARDISO, complex symmetric (mtype 6): analysis once, then factorise and solve per ω."""

    MTYPE = 6
    # A direct solve whose residual ‖A(ω)x − b‖/‖b‖ is above this is refined from its factors.
    refine_above = 1e-10

    def __init__(self, pattern: Pattern, threads: int = 1) -> None:
        library = _mkl()
        if library is None:
            raise RuntimeError("MKL PARDISO is not loadable here")
        self._lib = library
        library.MKL_Set_Interface_Layer(0)  # LP64: 32-bit integers
        library.MKL_Set_Num_Threads(ctypes.c_int(threads))
        self.pattern = pattern
        self.n = pattern.n
        self._pt = np.zeros(64, np.int64)
        self._iparm = np.zeros(64, np.int32)
        self._a = pattern.values(0.0, upper=True)
        mtype = ctypes.c_int32(self.MTYPE)
        library.pardisoinit(self._pt.ctypes.data_as(ctypes.c_void_p), ctypes.byref(mtype),
                            self._iparm.ctypes.data_as(ctypes.c_void_p))
        self._iparm[34] = 1  # zero-based ia/ja
        self._call(11, np.zeros(self.n, complex), np.zeros(self.n, complex))
        self._analysed = True

    def _call(self, phase: int, b: np.ndarray, x: np.ndarray) -> None:
        i32 = ctypes.c_int32
        error = i32(0)
        p = self.pattern
        self._lib.pardiso(
            self._pt.ctypes.data_as(ctypes.c_void_p), ctypes.byref(i32(1)), ctypes.byref(i32(1)),
            ctypes.byref(i32(self.MTYPE)), ctypes.byref(i32(phase)), ctypes.byref(i32(self.n)),
            self._a.ctypes.data_as(ctypes.c_void_p), p.upper_indptr.ctypes.data_as(ctypes.c_void_p),
            p.upper_indices.ctypes.data_as(ctypes.c_void_p), None, ctypes.byref(i32(1)),
            self._iparm.ctypes.data_as(ctypes.c_void_p), ctypes.byref(i32(0)),
            b.ctypes.data_as(ctypes.c_void_p), x.ctypes.data_as(ctypes.c_void_p), ctypes.byref(error))
        if error.value != 0:
            raise RuntimeError(f"PARDISO phase {phase} failed with error {error.value}")

    def solve(self, omega: float, rhs: np.ndarray) -> np.ndarray:
        """Factorise A(ω) and solve; PARDISO's refinement steps only when the residual needs them.

        On the 40k plate they cost 12-15 % of a frequency (A/B rounds) and took the worst residual
        over a sweep from 1.8e-11 to 1.6e-11: the residual is checked instead (one product with
        A(ω)), and a solution above :attr:`refine_above` is solved again from its factors, refined.
        """
        self._a[:] = self.pattern.values(omega, upper=True)
        b = np.ascontiguousarray(rhs, dtype=complex)
        x = np.zeros(self.n, complex)
        self._unrefined(23, b, x)
        if relative_residual(self.pattern, omega, x, b) > self.refine_above:
            x = np.zeros(self.n, complex)
            self._call(33, b, x)
        return x

    def _unrefined(self, phase: int, b: np.ndarray, x: np.ndarray) -> None:
        """Run ``phase`` with no iterative refinement, leaving the setting as it was."""
        refinement = int(self._iparm[7])
        self._iparm[7] = 0
        try:
            self._call(phase, b, x)
        finally:
            self._iparm[7] = refinement

    def factorise(self, omega: float) -> None:
        """Factorise A(ω) (phase 22) and keep the factors for :meth:`apply`."""
        self._a[:] = self.pattern.values(omega, upper=True)
        self._call(22, np.zeros(self.n, complex), np.zeros(self.n, complex))

    def apply(self, rhs: np.ndarray) -> np.ndarray:
        """Solve with the kept factors (phase 33): A(ω₀)⁻¹ rhs, without iterative refinement.

        As a preconditioner the solve need not be exact (GMRES corrects it), and PARDISO's two
        default refinement steps doubled its cost: 42-47 ms against 18-20 ms on the 40k plate.
        """
        b = np.ascontiguousarray(rhs, dtype=complex)
        x = np.zeros(self.n, complex)
        self._unrefined(33, b, x)
        return x

    @property
    def refinement_steps(self) -> int:
        """The iterative refinement steps PARDISO made in its last solve."""
        return int(self._iparm[6])

    def close(self) -> None:
        if getattr(self, "_analysed", False):
            self._call(-1, np.zeros(1, complex), np.zeros(1, complex))
            self._analysed = False

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class SuperLUSolver:
    """SciPy SuperLU ordered on AᵀA's symmetric structure (``MMD_AT_PLUS_A``), ``SymmetricMode``."""

    def __init__(self, pattern: Pattern, threads: int = 1) -> None:
        self.pattern = pattern

    def solve(self, omega: float, rhs: np.ndarray) -> np.ndarray:
        from scipy.sparse.linalg import splu

        factor = splu(self.pattern.matrix(omega).tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.01,
                      options={"SymmetricMode": True})
        return factor.solve(np.asarray(rhs, dtype=complex))

    def close(self) -> None:
        pass


class SpsolveSolver:
    """``scipy.sparse.linalg.spsolve`` on K + iωC − ω²M built anew each time: the baseline."""

    def __init__(self, pattern: Pattern, threads: int = 1) -> None:
        self.pattern = pattern

    def solve(self, omega: float, rhs: np.ndarray) -> np.ndarray:
        from scipy.sparse.linalg import spsolve

        return spsolve(self.pattern.matrix(omega).tocsc(), np.asarray(rhs, dtype=complex))

    def close(self) -> None:
        pass


class ReusedFactorSolver:
    """One factorisation of A(ω₀) preconditions GMRES at the neighbouring ω; refactorise when it stops paying.

    Neighbouring frequencies have nearly the same matrix, so A(ω₀)⁻¹ A(ω) is close to the identity
    and GMRES needs a few iterations (each one solve with the kept factors and one product with
    A(ω)) where a direct solve needs a new factorisation. Every answer is checked against the
    true residual ‖A(ω)x − b‖/‖b‖ ≤ ``tolerance``; when GMRES needs more than ``max_iterations``
    (the frequencies moved too far from ω₀), A(ω) is factorised and becomes the new ω₀. The
    factors come from PARDISO when MKL loads, from SuperLU otherwise.
    """

    def __init__(self, pattern: Pattern, threads: int = 1, tolerance: float = 1e-10, max_iterations: int = 25) -> None:
        self.pattern = pattern
        self.tolerance, self.max_iterations = tolerance, max_iterations
        self._pardiso = PardisoSolver(pattern, threads) if pardiso_available() else None
        self.base: float | None = None
        self.factorisations = 0
        self.iterations: list[int] = []
        self._apply: Callable[[np.ndarray], np.ndarray] | None = None

    def _factorise(self, omega: float) -> None:
        if self._pardiso is not None:
            self._pardiso.factorise(omega)
            self._apply = self._pardiso.apply
        else:
            from scipy.sparse.linalg import splu

            factor = splu(self.pattern.matrix(omega).tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.01,
                          options={"SymmetricMode": True})
            self._apply = factor.solve
        self.base = omega
        self.factorisations += 1

    def _iterate(self, matrix, rhs: np.ndarray) -> tuple[np.ndarray | None, int]:
        from scipy.sparse.linalg import LinearOperator, gmres

        count = [0]
        preconditioner = LinearOperator(matrix.shape, matvec=self._apply, dtype=complex)
        x, _ = gmres(matrix, rhs, M=preconditioner, rtol=self.tolerance / 1000, atol=0.0,
                     restart=self.max_iterations, maxiter=1, callback=lambda _: count.__setitem__(0, count[0] + 1),
                     callback_type="pr_norm")
        scale = np.linalg.norm(rhs) or 1.0
        if np.linalg.norm(matrix @ x - rhs) / scale <= self.tolerance:
            return x, count[0]
        return None, count[0]

    def solve(self, omega: float, rhs: np.ndarray) -> np.ndarray:
        rhs = np.asarray(rhs, dtype=complex)
        matrix = self.pattern.matrix(omega)
        if self.base is None:
            self._factorise(omega)
        x, count = self._iterate(matrix, rhs)
        if x is None or count > self.max_iterations:
            self._factorise(omega)
            x, count = self._iterate(matrix, rhs)
            if x is None:
                raise RuntimeError(f"no solution to a residual of {self.tolerance:g} at ω = {omega:g}, "
                                   "even with A(ω) factorised")
        self.iterations.append(count)
        return x

    def close(self) -> None:
        if self._pardiso is not None:
            self._pardiso.close()


_SOLVER_CLASSES = {"reuse": ReusedFactorSolver, "pardiso": PardisoSolver, "superlu": SuperLUSolver, "spsolve": SpsolveSolver}
_WORKER_STATE: dict[str, object] = {}


def solver_for(model: Model, name: str = "auto", threads: int = 1):
    """A solver for ``model``, kept for the next call with the same model (one per process).

    On a worker the broadcast model stays the same object for every task, so PARDISO's
    analysis and the aligned pattern are done once per worker, not once per task.
    """
    name = resolve_solver(name)
    key = (model.key, name, threads)
    if _WORKER_STATE.get("key") != key:
        old = _WORKER_STATE.pop("solver", None)
        if old is not None:
            old.close()
        pattern = _WORKER_STATE["pattern"] if _WORKER_STATE.get("model") == model.key else Pattern(model)
        _WORKER_STATE.update(key=key, model=model.key, pattern=pattern,
                             solver=_SOLVER_CLASSES[name](pattern, threads=threads))
    return _WORKER_STATE["solver"]


def relative_residual(pattern: Pattern, omega: float, x: np.ndarray, rhs: np.ndarray) -> float:
    """‖A(ω)x − rhs‖ / ‖rhs‖."""
    return float(np.linalg.norm(pattern.matrix(omega) @ x - rhs) / np.linalg.norm(rhs))


@dataclass
class Response:
    """The response at the model's output displacements, one row per frequency."""

    omegas: np.ndarray
    outputs: np.ndarray
    residuals: np.ndarray
    solver: str


def solve_frequencies(omegas: Sequence[float], model: Model, solver: str = "auto", threads: int = 1,
                      amplitude: Callable[[float], complex] | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Solve at each ω; return the outputs (len(ω) x outputs), the residuals and the solver's name."""
    chosen = solver_for(model, solver, threads)
    outputs = np.empty((len(omegas), len(model.outputs)), complex)
    residuals = np.empty(len(omegas))
    for i, omega in enumerate(omegas):
        rhs = model.b * (1.0 if amplitude is None else amplitude(omega))
        x = chosen.solve(float(omega), rhs)
        outputs[i] = x[model.outputs]
        residuals[i] = relative_residual(chosen.pattern, float(omega), x, rhs)
    return outputs, residuals, resolve_solver(solver)


def _solve_one(omega: float, model: Model, solver: str, threads: int,
               amplitude: Callable[[float], complex] | None) -> tuple[np.ndarray, float, str]:
    outputs, residuals, name = solve_frequencies([omega], model, solver, threads, amplitude)
    return outputs[0], float(residuals[0]), name


def frequency_response(bridge: Bridge, model: Model, omegas: Sequence[float], solver: str = "auto",
                       threads: int = 1, amplitude: Callable[[float], complex] | None = None,
                       progress: bool = True) -> Response:
    """Broadcast the model once, map the frequencies over the workers, gather in order.

    The connector groups frequencies into chunks; each worker builds the pattern and (with
    PARDISO) its analysis once for the model and reuses them for every frequency it gets. The
    broadcast is released at the end.
    """
    omegas = np.asarray(omegas, float)
    handle = bridge.broadcast(model)
    # The reused factorisation pays off along neighbouring frequencies: one contiguous block per thread.
    blocks = math.ceil(len(omegas) / max(1, bridge.total_threads)) if solver == "reuse" else None
    try:
        run = bridge.map(_solve_one, omegas, args=(handle, solver, threads, amplitude), chunk_size=blocks,
                         progress=progress)
        results = bridge.gather(run, progress=progress)
    finally:
        bridge.release(handle)
    return Response(omegas=omegas, outputs=np.array([r[0] for r in results]),
                    residuals=np.array([r[1] for r in results]), solver=",".join(sorted({r[2] for r in results})))


_TRIPLET_MODELS: dict[int, tuple[object, Model]] = {}


def model_from_triplets(data: dict) -> Model:
    """A model from K, C, M as (row, column, value) triplets, numbered from 1 as MATLAB's ``find`` gives.

    ``data`` has ``n``, ``K_i``, ``K_j``, ``K_v`` (and the same for C and M), ``b`` and ``outputs``
    (1-based indices of the displacements to return).
    """
    import scipy.sparse as sp

    n = int(data["n"])

    def matrix(name: str):
        rows = np.asarray(data[f"{name}_i"], np.int64).ravel() - 1
        cols = np.asarray(data[f"{name}_j"], np.int64).ravel() - 1
        return sp.csr_matrix((np.asarray(data[f"{name}_v"], float).ravel(), (rows, cols)), shape=(n, n))

    outputs = np.atleast_1d(np.asarray(data["outputs"], np.int64).ravel() - 1)
    return Model(K=matrix("K"), C=matrix("C"), M=matrix("M"), b=np.asarray(data["b"], float).ravel(), outputs=outputs)


def response_from_triplets(omega: float, data: dict, solver: str = "auto") -> np.ndarray:
    """x at ``data["outputs"]`` for one ω, then the residual as the last element (complex vector).

    The model is built once per worker for a broadcast ``data`` (the same object for every
    task), so the pattern and PARDISO's analysis are reused as with :func:`frequency_response`.
    """
    key = id(data)
    held = _TRIPLET_MODELS.get(key)
    if held is None or held[0] is not data:
        _TRIPLET_MODELS.clear()
        _TRIPLET_MODELS[key] = held = (data, model_from_triplets(data))
    model = held[1]
    outputs, residuals, _ = solve_frequencies([float(np.ravel(omega)[0])], model, solver)
    return np.concatenate([outputs[0], [residuals[0]]])


# --- a model the user brings ------------------------------------------------------------------

@dataclass(frozen=True)
class TabulatedLoad:
    """P(ω) from a table (ω ascending, complex values), linear between the points; picklable for workers."""

    omegas: np.ndarray
    values: np.ndarray

    def __call__(self, omega: float) -> complex:
        return complex(np.interp(omega, self.omegas, self.values.real),
                       np.interp(omega, self.omegas, self.values.imag))


def load_model(path: str | os.PathLike[str]) -> tuple[Model, TabulatedLoad | None]:
    """K, C, M, b (and optionally P(ω) and the output DOFs) from a ``.npz`` or MATLAB ``.mat`` file.

    ``.mat`` (``save model.mat K C M b``, read with ``scipy.io.loadmat``): sparse or full K, C, M;
    ``outputs`` counts from 1 as in MATLAB. ``.npz`` (``numpy.savez``): each matrix full, or as
    ``K_row``, ``K_col``, ``K_data`` (from 0) with ``n``; ``outputs`` counts from 0. Both: the
    optional table ``P_omega`` (rad/s, ascending) and ``P`` scales b at each ω; without
    ``outputs`` every displacement is returned.
    """
    import scipy.sparse as sp

    path = Path(path)
    if not path.is_file():
        raise MeshError(f"no model file {path}: expected a .npz or .mat file holding K, C, M and b")
    if path.suffix == ".mat":
        import scipy.io

        data = {k: v for k, v in scipy.io.loadmat(str(path)).items() if not k.startswith("__")}
        first = 1
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            data = dict(archive)
        first = 0
    else:
        raise MeshError(f"model file {path}: expected a .npz or .mat file, not {path.suffix or 'no suffix'}")

    def matrix(name: str):
        if name in data:
            return sp.csr_matrix(data[name], dtype=float)
        if f"{name}_data" in data and "n" in data:
            n = int(np.ravel(data["n"])[0])
            return sp.csr_matrix((np.ravel(data[f"{name}_data"]).astype(float),
                                  (np.ravel(data[f"{name}_row"]), np.ravel(data[f"{name}_col"]))), shape=(n, n))
        raise MeshError(f"model file {path} has no {name} (found: {', '.join(sorted(data)) or 'nothing'})")

    K, C, M = matrix("K"), matrix("C"), matrix("M")
    if "b" not in data:
        raise MeshError(f"model file {path} has no b (found: {', '.join(sorted(data))})")
    b = np.ravel(data["b"]).astype(float)
    if not (K.shape == C.shape == M.shape == (len(b), len(b))):
        raise MeshError(f"model file {path}: K {K.shape}, C {C.shape}, M {M.shape} and b ({len(b)}) do not match")
    outputs = (np.ravel(data["outputs"]).astype(np.int64) - first) if "outputs" in data else np.arange(len(b))
    if outputs.size == 0 or outputs.min() < 0 or outputs.max() >= len(b):
        raise MeshError(f"model file {path}: outputs must be DOFs {first}..{len(b) - 1 + first}")
    load = None
    if "P" in data or "P_omega" in data:
        omegas, values = np.ravel(data.get("P_omega", [])).astype(float), np.ravel(data.get("P", [])).astype(complex)
        if len(omegas) != len(values) or len(omegas) < 2 or np.any(np.diff(omegas) <= 0):
            raise MeshError(f"model file {path}: P_omega (ascending, at least 2) and P need one length")
        load = TabulatedLoad(omegas, values)
    K.sort_indices()
    return Model(K=K, C=C, M=sp.csr_matrix(M), b=b, outputs=outputs, first_dof=first), load
