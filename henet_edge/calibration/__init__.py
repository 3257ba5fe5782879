"""Calibration sets for int8 quantization: deterministic, stratified, with provenance."""

from .calibration_set import CalibrationError, CalibrationSet, load_calibration, make_calibration

__all__ = ["CalibrationError", "CalibrationSet", "load_calibration", "make_calibration"]
