"""Client side of imsbox: UE helpers (registration with Digest, later ``imsbox ue``)."""

from .register import Registration, register

__all__ = ["Registration", "register"]
