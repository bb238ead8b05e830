"""Physically based simulation of 2D SIM raw data (numpy only)."""

from mlsim_live.sim.camera import Camera
from mlsim_live.sim.optics import Optics, incoherent_otf, otf_2d
from mlsim_live.sim.pattern import Pattern
from mlsim_live.sim.samples import SAMPLE_KINDS, make_sample
from mlsim_live.sim.simulate import (
    FrameRenderer,
    PhysicsRanges,
    Signal,
    SimGroup,
    SIMParams,
    random_params,
    realistic_ranges,
    simulate_group,
)

__all__ = [
    "SAMPLE_KINDS",
    "Camera",
    "FrameRenderer",
    "Optics",
    "Pattern",
    "PhysicsRanges",
    "SIMParams",
    "Signal",
    "SimGroup",
    "incoherent_otf",
    "make_sample",
    "otf_2d",
    "random_params",
    "realistic_ranges",
    "simulate_group",
]
