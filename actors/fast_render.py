"""CarRacing-v3 with the same physics and the same pixels, rendered only when asked and faster.

Stock `CarRacing.step()` renders every frame (~97% of its time): a new 1000x800 pygame surface,
~800 polygons transformed vertex by vertex in Python, a vertical flip, the HUD and the score text
(a font loaded from disk every frame), then a smooth-scale to 96x96. `FastCarRacing` keeps the
physics, rewards and termination of the stock class untouched (it calls the inherited `step()`)
and changes only how a frame is produced:

1. `step()` never renders. `render_state()` renders the state left by the last `step()` (or the
   reset), so frames that action repeat drops are never drawn. Rendering reads only the car state,
   `t` and the score, none of which change after `_render` inside stock `step()` except the score,
   which is captured at that point for the HUD text.
2. All polygon vertices of a track (background, grass, road, kerbs) sit in one numpy array built
   with the track; each frame rotates, zooms and translates them in one pass with exactly the
   stock float operations (`c*x - s*y`, `x*zoom + t`, with `c, s` taken from pygame's own
   `Vector2.rotate_rad`), so the same float coordinates reach the same gfxdraw calls.
3. Polygons whose bounding box misses the pixels that reach the observation are not drawn (they
   would write no pixel there); stock culls only those beyond a ~380 px margin.
4. When the background square covers the whole screen, a fill replaces its gfxdraw calls.
5. Only the source rows that feed the kept output rows are smooth-scaled: output rows 0:R come from
   source rows 0:R*800/96, and pygame's fixed-point step (0x10000*800/96) is the same for any
   R divisible by 3, so the scaled rows are identical. The score text (source rows ~725-775) is
   drawn only when those rows are kept.

tests/test_env.py checks byte-identity against stock `gymnasium.make("CarRacing-v3")`.
"""

from __future__ import annotations

import numpy as np
import pygame
from gymnasium.envs.box2d.car_racing import (
    GRASS_DIM,
    MAX_SHAPE_DIM,
    PLAYFIELD,
    SCALE,
    STATE_H,
    STATE_W,
    WINDOW_H,
    WINDOW_W,
    ZOOM,
    CarRacing,
)
from pygame import gfxdraw

# Source rows per output row (800 / 96 = 25 / 3): R output rows need exactly R * 25 / 3 source rows.
_ROWS_NUM, _ROWS_DEN = WINDOW_H, STATE_H
# The HUD band (black box, indicators, score) starts at this source row of the flipped surface.
_HUD_TOP_ROW = WINDOW_H - 5 * WINDOW_H // 40
# gfxdraw touches pixels up to ~1 px outside a polygon's bounding box (anti-aliased edges and
# float-to-int rounding); anything further away cannot change a kept pixel.
_DRAW_MARGIN_PX = 4.0


def scaled_rows(obs_rows: int) -> tuple[int, int]:
    """Output rows to produce (>= obs_rows, divisible by 3) and the source rows that feed them."""
    rows = min(STATE_H, -(-obs_rows // 3) * 3)
    return rows, rows * _ROWS_NUM // _ROWS_DEN


class _Scene:
    """Every static polygon of one track in stock drawing order: background, grass, road and kerbs."""

    def __init__(self, road_poly: list, bg_color: np.ndarray, grass_color: np.ndarray) -> None:
        bounds = PLAYFIELD
        polys = [[(bounds, bounds), (bounds, -bounds), (-bounds, -bounds), (-bounds, bounds)]]
        colors: list = [bg_color]
        # Same expressions as CarRacing._render_road, so the floats are identical.
        for x in range(-20, 20, 2):
            for y in range(-20, 20, 2):
                polys.append(
                    [
                        (GRASS_DIM * x + GRASS_DIM, GRASS_DIM * y + 0),
                        (GRASS_DIM * x + 0, GRASS_DIM * y + 0),
                        (GRASS_DIM * x + 0, GRASS_DIM * y + GRASS_DIM),
                        (GRASS_DIM * x + GRASS_DIM, GRASS_DIM * y + GRASS_DIM),
                    ]
                )
                colors.append(grass_color)
        self.first_road = len(polys)
        for poly, color in road_poly:
            assert len(poly) == 4, "CarRacing road polygons are quads"
            polys.append([(p[0], p[1]) for p in poly])
            # The tile's own array: the contact listener rewrites tile colours during the episode.
            colors.append(color)
        self.vertices = np.array(polys, dtype=np.float64)  # [M, 4, 2]
        self.colors = colors
        self.bg_color = tuple(int(c) for c in bg_color)

    def to_screen(self, zoom: float, trans: tuple[float, float], angle: float) -> np.ndarray:
        """Screen coordinates [M, 4, 2], bit-equal to stock `_draw_colored_polygon`'s."""
        # pygame's rotate_rad: normalise the angle, special-case multiples of 90 degrees, else
        # (c*x - s*y, s*x + c*y). Rotating (1, 0) yields exactly its c and s in every case.
        c, s = pygame.math.Vector2(1.0, 0.0).rotate_rad(angle)
        x = self.vertices[..., 0]
        y = self.vertices[..., 1]
        out = np.empty_like(self.vertices)
        out[..., 0] = (c * x - s * y) * zoom + trans[0]
        out[..., 1] = (s * x + c * y) * zoom + trans[1]
        return out


class FastCarRacing(CarRacing):
    """Stock CarRacing physics; frames rendered on demand by `render_state()`, byte-identical.

    `obs_rows` is how many top rows of the 96x96 state the caller keeps; `render_state()` returns
    at least those rows (HWC uint8), the rest are not computed.
    """

    def __init__(self, obs_rows: int = STATE_H, **kwargs) -> None:
        super().__init__(**kwargs)
        assert not self.domain_randomize, "FastCarRacing supports the default colours only"
        self.out_rows, self.src_rows = scaled_rows(obs_rows)
        self._canvas = pygame.Surface((WINDOW_W, WINDOW_H))
        self._flipped = pygame.Surface((WINDOW_W, WINDOW_H))
        self._small = pygame.Surface((STATE_W, self.out_rows))
        self._scene: _Scene | None = None
        self._hud_reward = 0.0

    def _create_track(self) -> bool:
        ok = super()._create_track()
        if ok:
            self._scene = _Scene(self.road_poly, self.bg_color, self.grass_color)
        return ok

    def _render(self, mode: str):
        if mode != "state_pixels":
            return super()._render(mode)  # videos ("rgb_array") and "human" stay stock
        # Called by stock step() at the point it would render: keep the score it would print.
        self._hud_reward = self.reward
        return None

    def render_state(self) -> np.ndarray:
        """uint8 [out_rows, 96, 3]: the top rows of the frame stock step() returned last."""
        assert self.car is not None and self._scene is not None, "call reset() first"
        angle = -self.car.hull.angle
        # Camera exactly as CarRacing._render computes it.
        zoom = 0.1 * SCALE * max(1 - self.t, 0) + ZOOM * SCALE * min(self.t, 1)
        scroll_x = -(self.car.hull.position[0]) * zoom
        scroll_y = -(self.car.hull.position[1]) * zoom
        trans = pygame.math.Vector2((scroll_x, scroll_y)).rotate_rad(angle)
        trans = (WINDOW_W / 2 + trans[0], WINDOW_H / 4 + trans[1])

        self._draw_scene(zoom, trans, angle)
        self.car.draw(self._canvas, zoom, trans, angle, False)
        self._flip_kept_rows()
        self.surf = self._flipped
        self._render_indicators(WINDOW_W, WINDOW_H)  # cheap; tall bars can reach the view
        if self.src_rows > _HUD_TOP_ROW:
            self._render_score()
        kept = self.surf.subsurface((0, 0, WINDOW_W, self.src_rows))
        pygame.transform.smoothscale(kept, (STATE_W, self.out_rows), self._small)
        return np.array(pygame.surfarray.pixels3d(self._small)).transpose(1, 0, 2)

    def _flip_kept_rows(self) -> None:
        """Rows 0:src_rows of stock's `pygame.transform.flip(surf, False, True)`, into a reused surface.

        Rows below src_rows keep stale pixels; nothing drawn there afterwards (the HUD polygons are
        not anti-aliased) reads them into the kept rows.
        """
        src = pygame.surfarray.pixels2d(self._canvas)  # [W, H] views, locked while alive
        dst = pygame.surfarray.pixels2d(self._flipped)
        dst[:, : self.src_rows] = src[:, ::-1][:, : self.src_rows]
        del src, dst

    def _draw_scene(self, zoom: float, trans: tuple[float, float], angle: float) -> None:
        scene = self._scene
        pts = scene.to_screen(zoom, trans, angle)
        xs, ys = pts[..., 0], pts[..., 1]
        # Stock culling: draw if any vertex lies within MAX_SHAPE_DIM of the screen.
        near = (
            (xs >= -MAX_SHAPE_DIM)
            & (xs <= WINDOW_W + MAX_SHAPE_DIM)
            & (ys >= -MAX_SHAPE_DIM)
            & (ys <= WINDOW_H + MAX_SHAPE_DIM)
        ).any(axis=1)
        # Exact culling: the bounding box must reach the canvas rows that are flipped into the
        # kept source rows 0:src_rows (canvas rows WINDOW_H - src_rows and below).
        m = _DRAW_MARGIN_PX
        touches = (
            (xs.max(axis=1) >= -m)
            & (xs.min(axis=1) <= WINDOW_W + m)
            & (ys.max(axis=1) >= WINDOW_H - self.src_rows - m)
            & (ys.min(axis=1) <= WINDOW_H + m)
        )
        draw = near & touches
        # Canvas rows above `kept` are never flipped into the kept rows: leave them stale.
        kept = (0, WINDOW_H - self.src_rows, WINDOW_W, self.src_rows)
        if self._covers_canvas(pts[0]):
            self._canvas.fill(scene.bg_color, kept)
            draw[0] = False
        else:
            self._canvas.fill((0, 0, 0), kept)  # stock starts from a new, black surface
            draw[0] = True  # the background is drawn unculled in stock
        for i in np.flatnonzero(draw).tolist():
            poly = pts[i].tolist()
            color = scene.colors[i]
            if i >= scene.first_road:
                color = [int(c) for c in color]
            gfxdraw.aapolygon(self._canvas, poly, color)
            gfxdraw.filled_polygon(self._canvas, poly, color)

    @staticmethod
    def _covers_canvas(quad: np.ndarray) -> bool:
        """True when the convex quad contains the canvas grown by the draw margin.

        Then its filled polygon paints every canvas pixel with its colour and its anti-aliased
        edges lie off the canvas, which is what a fill does.
        """
        m = _DRAW_MARGIN_PX
        corners = np.array(
            [[-m, -m], [WINDOW_W + m, -m], [WINDOW_W + m, WINDOW_H + m], [-m, WINDOW_H + m]]
        )
        edges = np.roll(quad, -1, axis=0) - quad  # [4, 2]
        rel = corners[:, None, :] - quad[None, :, :]  # [corner, edge, 2]
        cross = edges[None, :, 0] * rel[..., 1] - edges[None, :, 1] * rel[..., 0]
        return bool((cross > 0).all() or (cross < 0).all())

    def _render_score(self) -> None:
        # As in CarRacing._render, with the score captured when stock step() rendered.
        pygame.font.init()
        font = pygame.font.Font(pygame.font.get_default_font(), 42)
        text = font.render(f"{self._hud_reward:04.0f}", True, (255, 255, 255), (0, 0, 0))
        text_rect = text.get_rect()
        text_rect.center = (60, WINDOW_H - WINDOW_H * 2.5 / 40.0)
        self.surf.blit(text, text_rect)
