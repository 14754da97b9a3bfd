"""The pinhole camera of one training or test view, with the images that belong to it."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from scene.contract import STATES


@dataclass
class Camera:
    """One view of one joint state.

    Geometry follows OpenCV axes (x right, y down, z forward) and gsplat's pixel convention (pixel (u, v) has its
    centre at (u + 0.5, v + 0.5)). Images are channel-first float tensors on the camera's device.
    """

    uid: int
    state: int  # 0 = start, 1 = end
    split: str  # "train" or "test"
    image_name: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    world_to_cam: Tensor  # (4, 4) float32
    image: Tensor | None = None  # (3, H, W) straight (not premultiplied) RGB in [0, 1]
    alpha: Tensor | None = None  # (1, H, W) foreground coverage in [0, 1]
    depth: Tensor | None = None  # (1, H, W) z-depth in scene units, 0 = unknown
    mask: Tensor | None = None  # (H, W) int32 part-prior region labels (stage 1), 0 = no region

    @property
    def state_name(self) -> str:
        return STATES[self.state]

    @property
    def device(self) -> torch.device:
        return self.world_to_cam.device

    @property
    def K(self) -> Tensor:
        """(3, 3) intrinsics on the camera's device."""
        return torch.tensor(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]],
            dtype=self.world_to_cam.dtype,
            device=self.device,
        )

    @property
    def cam_to_world(self) -> Tensor:
        """(4, 4) camera-to-world matrix (OpenCV axes)."""
        return torch.linalg.inv(self.world_to_cam)

    @property
    def camera_center(self) -> Tensor:
        """(3,) camera centre in world coordinates."""
        R, t = self.world_to_cam[:3, :3], self.world_to_cam[:3, 3]
        return -R.T @ t

    def composite(self, bg: Tensor) -> Tensor:
        """(3, H, W) ground-truth image composited over background colour `bg` (3,) using its alpha."""
        assert self.image is not None and self.alpha is not None, f"camera {self.image_name} has no image"
        return composite(self.image, self.alpha, bg)

    def to(self, device: torch.device | str) -> "Camera":
        """A copy with every tensor moved to `device`."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return dataclasses.replace(self, **moved)


def composite(image: Tensor, alpha: Tensor, bg: Tensor) -> Tensor:
    """(..., 3, H, W) `image` (..., 3, H, W) with opacity `alpha` (..., 1, H, W) over the background colour `bg`
    (..., 3): one image, or a batch with a colour each."""
    return image * alpha + bg[..., None, None] * (1.0 - alpha)
