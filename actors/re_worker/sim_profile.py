"""Built-in simulated station profile: ophyd.sim devices and bluesky plans, loaded as a startup module.

Mirrors bluesky-queueserver's `profile_collection_sim` (same device, plan and function names, so its clients
and examples work unchanged) without the RunEngine (the worker creates it), BestEffortCallback, matplotlib
or printing while it loads.
"""

# ruff: noqa: F401  -- the imported plans are the profile's content: they are found in the module namespace

import time as ttime
import typing
from typing import Any

import bluesky
import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import ophyd
import ophyd.sim
from bluesky.plan_stubs import mv, mvr, null
from bluesky.plans import (
    adaptive_scan,
    count,
    fly,
    grid_scan,
    inner_product_scan,
    list_grid_scan,
    list_scan,
    log_scan,
    ramp_plan,
    rel_adaptive_scan,
    rel_grid_scan,
    rel_list_grid_scan,
    rel_list_scan,
    rel_log_scan,
    rel_scan,
    rel_spiral,
    rel_spiral_fermat,
    rel_spiral_square,
    relative_inner_product_scan,
    scan,
    scan_nd,
    spiral,
    spiral_fermat,
    spiral_square,
    tune_centroid,
    tweak,
    x2x_scan,
)
from bluesky.utils import ProgressBar
from bluesky_queueserver.manager.annotation_decorator import parameter_annotation_decorator
from ophyd import Component as Cpt
from ophyd import Device
from ophyd.sim import hw

# -- devices: a fresh set of ophyd.sim's example hardware (not the module-level instances of ophyd.sim) ---
_hw = hw()
ab_det, bool_sig, identical_det, noisy_det, rand, rand2 = (
    _hw.ab_det,
    _hw.bool_sig,
    _hw.identical_det,
    _hw.noisy_det,
    _hw.rand,
    _hw.rand2,
)
det, det1, det2, det3, det4, det5 = _hw.det, _hw.det1, _hw.det2, _hw.det3, _hw.det4, _hw.det5
det_with_conf, det_with_count_time = _hw.det_with_conf, _hw.det_with_count_time
direct_img, direct_img_list, img = _hw.direct_img, _hw.direct_img_list, _hw.img
motor, motor1, motor2, motor3 = _hw.motor, _hw.motor1, _hw.motor2, _hw.motor3
jittery_motor1, jittery_motor2 = _hw.jittery_motor1, _hw.jittery_motor2
motor_empty_hints1, motor_empty_hints2 = _hw.motor_empty_hints1, _hw.motor_empty_hints2
motor_no_hints1, motor_no_hints2, motor_no_pos = _hw.motor_no_hints1, _hw.motor_no_hints2, _hw.motor_no_pos
invariant1, invariant2, pseudo1x3, pseudo3x3 = _hw.invariant1, _hw.invariant2, _hw.pseudo1x3, _hw.pseudo3x3
sig, signal = _hw.sig, _hw.signal
flyer1, flyer2, trivial_flyer, new_trivial_flyer = (
    _hw.flyer1,
    _hw.flyer2,
    _hw.trivial_flyer,
    _hw.new_trivial_flyer,
)
del _hw

custom_test_device = ophyd.Device(name="custom_test_device")
custom_test_signal = ophyd.Signal(name="custom_test_signal")
custom_test_flyer = ophyd.sim.MockFlyer("custom_test_flyer", det, motor, 1, 5, 20)


class SimStage(Device):
    """Three simulated axes; movable as a whole."""

    x = Cpt(ophyd.sim.SynAxis, name="y", labels={"motors"})
    y = Cpt(ophyd.sim.SynAxis, name="y", labels={"motors"})
    z = Cpt(ophyd.sim.SynAxis, name="z", labels={"motors"})

    def set(self, x: float, y: float, z: float) -> None:
        """Makes the device movable."""
        self.x.set(x)
        self.y.set(y)
        self.z.set(z)


class SimDetectors(Device):
    """Two detectors driven by the global `motor1` and `motor2`."""

    det_A = Cpt(
        ophyd.sim.SynGauss,
        name="det_A",
        motor=motor1,
        motor_field="motor1",
        center=0,
        Imax=5,
        sigma=0.5,
        labels={"detectors"},
    )
    det_B = Cpt(
        ophyd.sim.SynGauss,
        name="det_B",
        motor=motor2,
        motor_field="motor2",
        center=0,
        Imax=5,
        sigma=0.5,
        labels={"detectors"},
    )


class SimBundle(ophyd.Device):
    """A device with sub-devices (for the device-tree descriptions)."""

    mtrs = Cpt(SimStage, name="mtrs")
    dets = Cpt(SimDetectors, name="dets")


sim_bundle_A = SimBundle(name="sim_bundle_A")
sim_bundle_B = SimBundle(name="sim_bundle_B")


# -- plans -------------------------------------------------------------------------------------------------
def marked_up_count(
    detectors: list[Any], num: int = 1, delay: float | None = None, md: dict[str, Any] | None = None
):
    return (yield from count(detectors, num=num, delay=delay, md=md))


@parameter_annotation_decorator(
    {
        "description": "Move motors into positions; then count dets.",
        "parameters": {
            "motors": {
                "description": "List of motors to be moved into specified positions before the measurement",
                "annotation": "typing.List[Motors]",
                "devices": {"Motors": ("motor1", "motor2")},
            },
            "detectors": {
                "description": "Detectors to use for measurement.",
                "annotation": "typing.List[Detectors]",
                "devices": {"Detectors": ("det1", "det2", "det3")},
                "default": ["det1", "det2"],
            },
            "positions": {
                "description": "Motor positions. The number of positions must be equal "
                "to the number of the motors.",
                "annotation": "typing.List[float]",
                "min": -10,
                "max": 10,
                "step": 0.01,
            },
        },
    }
)
def move_then_count(
    motors: typing.List[ophyd.device.Device],  # noqa: UP006  -- as the incumbent writes it: same description
    detectors: typing.Optional[typing.List[ophyd.device.Device]] = None,  # noqa: UP006, UP045
    positions: typing.Optional[typing.List[float]] = None,  # noqa: UP006, UP045
) -> typing.Generator[bluesky.utils.Msg, None, None]:
    if not isinstance(motors, list | tuple):
        raise TypeError(f"Parameter 'motors' should be a list or a tuple: type(motors) = {type(motors)}")
    if not isinstance(detectors, list | tuple):
        raise TypeError(
            f"Parameter 'detectors' should be a list or a tuple: type(detectors) = {type(detectors)}"
        )
    if not isinstance(positions, list | tuple):
        raise TypeError(
            f"Parameter 'positions' should be a list or a tuple: type(positions) = {type(positions)}"
        )
    if len(motors) != len(positions):
        raise TypeError(
            f"The lists of 'motors' and 'positions' should have the same number of elements: "
            f"len(motors) = {len(motors)}, len(positions) = {len(positions)}"
        )
    yield from bps.mv(*[val for pair in zip(motors, positions, strict=True) for val in pair])
    yield from count(detectors)


@bpp.set_run_key_decorator("run_2")
@bpp.run_decorator(md={})
def _sim_plan_inner(npts: int, delay: float = 1.0):
    for j in range(npts):
        yield from bps.mov(motor1, j * 0.1 + 1, motor2, j * 0.2 - 2)
        yield from bps.trigger_and_read([motor1, motor2, det2])
        yield from bps.sleep(delay)


@bpp.set_run_key_decorator("run_1")
@bpp.run_decorator(md={})
@parameter_annotation_decorator(
    {
        "description": "Simulated multi-run plan: two nested runs. "
        "The plan is included for testing purposes only.",
        "parameters": {
            "npts": {
                "description": "The number of measurements in the outer run. "
                "Inner run will contain 'npts+1' measurements.",
            },
            "delay": {"description": "Delay between measurements."},
        },
    }
)
def sim_multirun_plan_nested(npts: int, delay: float = 1.0):
    for j in range(int(npts / 2)):
        yield from bps.mov(motor, j * 0.2)
        yield from bps.trigger_and_read([motor, det])
        yield from bps.sleep(delay)

    yield from _sim_plan_inner(npts + 1, delay)

    for j in range(int(npts / 2), npts):
        yield from bps.mov(motor, j * 0.2)
        yield from bps.trigger_and_read([motor, det])
        yield from bps.sleep(delay)


@parameter_annotation_decorator(
    {
        "parameters": {
            "detectors": {
                "annotation": "typing.List[DetList]",
                "devices": {"DetList": ["det", "det1", "det2", "det3", ":+^sim_bundle:?.*$"]},
            }
        }
    }
)
def count_bundle_test(detectors, num=1, delay=None, *, per_shot=None, md=None):
    yield from count(detectors, num=num, delay=delay, per_shot=per_shot, md=md)


class _StatusPlaceholder:
    """Just enough of a status for ProgressBar; updated by hand."""

    def __init__(self) -> None:
        self.done = False

    def watch(self, _: Any) -> None: ...


def plan_test_progress_bars(n_progress_bars: int = 1):
    """
    Test visualization of progress bars.

    Parameters
    ----------
    n_progress_bars: int
        The number of progress bars to display.
    """
    n_progress_bars = max(n_progress_bars, 1)
    st_list = [_StatusPlaceholder() for _ in range(n_progress_bars)]
    pbar = ProgressBar(st_list)
    v_min, v_max, n_pts = 0, 1, 10
    step = (v_max - v_min) / n_pts
    print(f"TESTING {n_progress_bars} PROGRESS BARS ...\n")
    for n in range(n_pts):
        yield from bps.sleep(0.5)
        v = v_min + (n + 1) * step
        for n_pb in range(n_progress_bars):
            pbar.update(
                n_pb, name=f"TEST{n_pb + 1}", current=v, initial=v_min, target=v_max, fraction=n / n_pts
            )
    for st in st_list:
        st.done = True
    for n_pb in range(n_progress_bars):
        pbar.update(n_pb, name=f"TEST{n_pb + 1}", current=1, initial=0, target=1, fraction=1)
    print("\n" * n_progress_bars + "\nTEST COMPLETED ...")


# -- functions for `function_execute` ----------------------------------------------------------------------
def function_sleep(time: float) -> dict[str, Any]:
    """Sleep for a given number of seconds."""
    ttime.sleep(time)
    return {"success": True, "time": time}


_fifo_buffer: list[Any] = []


def push_buffer_element(element: Any) -> None:
    """Push an element to a FIFO buffer."""
    _fifo_buffer.append(element)


def pop_buffer_element() -> Any:
    """Pop an element from the FIFO buffer (raises when it is empty, so the task fails with a traceback)."""
    return _fifo_buffer.pop(0)


def clear_buffer() -> None:
    """Empty the FIFO buffer."""
    _fifo_buffer.clear()
