"""Expected work to absorption in an agent's graph, solved exactly.

Contract: `solve_absorbing(rows, size)` takes one row per node, `(cont, targets)` with `targets` a list of
`(j, p, g, y)`: the node continues with probability `cont`, then goes to node `j` with probability `p`, adding
`g` prompt tokens and `y` output tokens (a `j` of `size` or more is outside the graph: it adds its own step
and nothing after it). It returns three lists of `size` floats, per node the expected calls, prompt tokens
added and output tokens still to come: the solution of x_i = cont_i * sum_j p_ij * (step_ij + x_j).

Why exact: the graph's step buckets are wide (64-255 calls, then 256 and more), so a long agent's node loops
on itself with a probability q near 1, and value iteration from zero needs thousands of sweeps there (300
sweeps reach 1 - q^300 of the answer, 78% at q = 0.995, and cost ~7% of the proxy's CPU per call). The chain
is a DAG of small loops (a node on itself, the states of one bucket among themselves), so it is solved one
strongly connected component at a time, in reverse topological order (Tarjan's order): a component of one
node is a division, a larger one a small dense elimination. Every row sums to `cont` < 1, so each block is
strictly diagonally dominant: elimination needs no pivoting and the answer is finite. `max_continue` caps
`cont` (a node seen thousands of times and never ending would otherwise promise tens of thousands of calls).
"""

from __future__ import annotations

Target = tuple[int, float, float, float]
Row = tuple[float, list[Target]]


def solve_absorbing(
    rows: list[Row], size: int, max_continue: float = 1.0 - 1e-4
) -> tuple[list[float], list[float], list[float]]:
    work = _Work(rows, size, max_continue)
    for component in _components(rows, size):
        if len(component) == 1:
            work.solve_one(component[0])
        else:
            work.solve_block(component)
    return work.calls, work.new, work.out


class _Work:
    """The three answers, filled in one component at a time (those a component leads to are in already)."""

    def __init__(self, rows: list[Row], size: int, max_continue: float) -> None:
        self.rows, self.size, self.max_continue = rows, size, max_continue
        self.calls = [0.0] * size
        self.new = [0.0] * size
        self.out = [0.0] * size

    def solve_one(self, i: int) -> None:
        calls, new, out, size = self.calls, self.new, self.out, self.size
        cont, targets = self.rows[i]
        cont = min(cont, self.max_continue)
        stay = 0.0
        c = n = o = 0.0
        for j, p, g, y in targets:
            c += p
            n += p * g
            o += p * y
            if j == i:
                stay += p
            elif j < size:
                c += p * calls[j]
                n += p * new[j]
                o += p * out[j]
        keep = 1.0 - cont * stay
        calls[i], new[i], out[i] = cont * c / keep, cont * n / keep, cont * o / keep

    def solve_block(self, component: list[int]) -> None:
        # (I - A) x = b over the component, with what it leads to outside already solved and folded into b.
        calls, new, out, size = self.calls, self.new, self.out, self.size
        k = len(component)
        place = {node: r for r, node in enumerate(component)}
        matrix = [[0.0] * k for _ in range(k)]
        rhs = [[0.0, 0.0, 0.0] for _ in range(k)]
        for r, i in enumerate(component):
            cont, targets = self.rows[i]
            cont = min(cont, self.max_continue)
            row, b = matrix[r], rhs[r]
            row[r] = 1.0
            for j, p, g, y in targets:
                w = cont * p
                b[0] += w
                b[1] += w * g
                b[2] += w * y
                col = place.get(j, -1)
                if col >= 0:
                    row[col] -= w
                elif j < size:
                    b[0] += w * calls[j]
                    b[1] += w * new[j]
                    b[2] += w * out[j]
        for r in range(k):  # Gaussian elimination; strictly diagonally dominant, so no pivoting
            pivot_row, pivot_rhs = matrix[r], rhs[r]
            pivot = pivot_row[r]
            for below in range(r + 1, k):
                row = matrix[below]
                factor = row[r] / pivot
                if factor != 0.0:
                    for col in range(r, k):
                        row[col] -= factor * pivot_row[col]
                    b = rhs[below]
                    b[0] -= factor * pivot_rhs[0]
                    b[1] -= factor * pivot_rhs[1]
                    b[2] -= factor * pivot_rhs[2]
        for r in range(k - 1, -1, -1):  # back substitution, into the answers (solved rows: already there)
            row, b = matrix[r], rhs[r]
            x0, x1, x2 = b[0], b[1], b[2]
            for col in range(r + 1, k):
                a = row[col]
                if a != 0.0:
                    j = component[col]
                    x0 -= a * calls[j]
                    x1 -= a * new[j]
                    x2 -= a * out[j]
            pivot = row[r]
            i = component[r]
            calls[i], new[i], out[i] = x0 / pivot, x1 / pivot, x2 / pivot


def _components(rows: list[Row], size: int) -> list[list[int]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit), each emitted after every
    component it leads to: the order to solve them in."""
    index = [-1] * size
    low = [0] * size
    on_stack = [False] * size
    stack: list[int] = []
    found: list[list[int]] = []
    counter = 0
    for root in range(size):
        if index[root] >= 0:
            continue
        work: list[tuple[int, int]] = [(root, 0)]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack[root] = True
        while work:
            node, edge = work[-1]
            targets = rows[node][1]
            if edge < len(targets):
                work[-1] = (node, edge + 1)
                j = targets[edge][0]
                if j >= size:
                    continue
                if index[j] < 0:
                    index[j] = low[j] = counter
                    counter += 1
                    stack.append(j)
                    on_stack[j] = True
                    work.append((j, 0))
                elif on_stack[j] and index[j] < low[node]:
                    low[node] = index[j]
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                if low[node] < low[parent]:
                    low[parent] = low[node]
            if low[node] == index[node]:
                component: list[int] = []
                while True:
                    j = stack.pop()
                    on_stack[j] = False
                    component.append(j)
                    if j == node:
                        break
                found.append(component)
    return found
