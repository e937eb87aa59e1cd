"""minigrid's partial view, computed without building and rotating intermediate grids.

minigrid's ``MiniGridEnv.gen_obs_grid`` slices a 7 x 7 ``Grid`` out of the world, rotates it
``agent_dir + 1`` times (each rotation builds a new ``Grid`` cell by cell), runs the occlusion
pass and then encodes the visible cells. It runs twice per bot step (once in the bot's
``_process_obs``, once in ``env.step``) and once per agent step, and in this study it takes
about half of the time of collecting demonstrations and most of the time of a rollout.

:func:`install` replaces the two methods on one environment *instance* by functions that
compute the same thing from one precomputed index table per (view size, direction): the same
cells, the same occlusion rule (minigrid's ``Grid.process_vis``, run on a flat list), the same
carried object at the agent's cell, the same ``uint8`` encoding. The results are equal to
minigrid's (``tests/collect/test_observation.py`` compares grids, masks and images over
random walks on every level, and the bot's actions with either view); only the time differs
(``benchmarks/bench_demos.py``: 1.40x the bare bot loop).
"""

from __future__ import annotations

import types
from functools import lru_cache
from typing import Any

import numpy as np
from minigrid.core.constants import OBJECT_TO_IDX
from minigrid.core.grid import Grid
from minigrid.core.world_object import Wall

_EMPTY = (OBJECT_TO_IDX["empty"], 0, 0)
_UNSEEN = (0, 0, 0)


@lru_cache(maxsize=None)
def _view_table(size: int, agent_dir: int) -> tuple[tuple[int, int], ...]:
    """For each view cell in ``Grid`` storage order (``j * size + i``), its (i, j) in the slice.

    The view is the slice rotated left ``agent_dir + 1`` times, as in ``gen_obs_grid``;
    ``Grid.rotate_left`` moves cell (i, j) to (j, size - 1 - i).
    """
    source = np.arange(size * size).reshape(size, size)  # [i, j] -> i * size + j
    view = source
    for _ in range(agent_dir + 1):
        rotated = np.empty_like(view)
        for i in range(size):
            for j in range(size):
                rotated[j, size - 1 - i] = view[i, j]
        view = rotated
    return tuple(divmod(int(view[i, j]), size) for j in range(size) for i in range(size))


def _visible(cells: list[Any], size: int, agent: tuple[int, int]) -> list[bool]:
    """``Grid.process_vis`` on a flat cell list (storage order); returns the flat mask."""
    mask = [False] * (size * size)
    mask[agent[1] * size + agent[0]] = True
    for j in reversed(range(size)):
        row = j * size
        for i in range(size - 1):
            if not mask[row + i]:
                continue
            cell = cells[row + i]
            if cell is not None and not cell.see_behind():
                continue
            mask[row + i + 1] = True
            if j > 0:
                mask[row - size + i + 1] = True
                mask[row - size + i] = True
        for i in reversed(range(1, size)):
            if not mask[row + i]:
                continue
            cell = cells[row + i]
            if cell is not None and not cell.see_behind():
                continue
            mask[row + i - 1] = True
            if j > 0:
                mask[row - size + i - 1] = True
                mask[row - size + i] = True
    return mask


def _view(env: Any, agent_view_size: int | None) -> tuple[int, list[Any], list[bool]]:
    """The view's size, its cells and its visibility, flat in ``Grid`` storage order."""
    top_x, top_y, _, _ = env.get_view_exts(agent_view_size)
    size = agent_view_size or env.agent_view_size
    world, width, height = env.grid.grid, env.grid.width, env.grid.height
    cells = []
    for i, j in _view_table(size, env.agent_dir):
        x, y = top_x + i, top_y + j
        cells.append(world[y * width + x] if 0 <= x < width and 0 <= y < height else Wall())
    agent = (size // 2, size - 1)
    mask = _visible(cells, size, agent)
    cells = [cell if seen else None for cell, seen in zip(cells, mask)]
    cells[agent[1] * size + agent[0]] = env.carrying if env.carrying else None
    return size, cells, mask


def gen_obs_grid(env: Any, agent_view_size: int | None = None) -> tuple[Grid, np.ndarray]:
    """What ``env.gen_obs_grid(agent_view_size)`` returns: the view ``Grid`` and its mask."""
    if env.see_through_walls:  # not a BabyAI setting; minigrid's own code handles it
        return type(env).gen_obs_grid(env, agent_view_size)
    size, cells, mask = _view(env, agent_view_size)
    grid = Grid(size, size)
    grid.grid = cells
    return grid, np.array(mask, dtype=bool).reshape(size, size).T  # [i, j], as minigrid's


def gen_obs(env: Any) -> dict[str, Any]:
    """What ``env.gen_obs()`` returns: the encoded view, the direction and the mission."""
    if env.see_through_walls:
        return type(env).gen_obs(env)
    size, cells, mask = _view(env, None)
    codes = []
    for i in range(size):
        for j in range(size):
            k = j * size + i
            codes.append((_EMPTY if cells[k] is None else cells[k].encode()) if mask[k] else _UNSEEN)
    image = np.array(codes, dtype=np.uint8).reshape(size, size, 3)
    return {"image": image, "direction": env.agent_dir, "mission": env.mission}


def install(env: Any) -> Any:
    """Make ``env`` (an unwrapped ``MiniGridEnv``) use the table-driven view; returns ``env``."""
    env.gen_obs_grid = types.MethodType(gen_obs_grid, env)
    env.gen_obs = types.MethodType(gen_obs, env)
    return env
