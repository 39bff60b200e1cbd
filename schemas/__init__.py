"""Pydantic models for everything that crosses a boundary: catalog, configs, records, reports.

The ones a Python user builds are importable from here (pydantic only: cheap to import)."""

from facepipe.schemas.catalog import Catalog, DatasetEntry
from facepipe.schemas.encoder import EncoderConfig, FitConfig, encoder_config
from facepipe.schemas.preprocess import PreprocessConfig, PreprocessFailure
from facepipe.schemas.rgbd import Intrinsics, RenderConfig, SensorPreset
from facepipe.schemas.scan import ReadLimits, ScanMeta
from facepipe.schemas.store import RunOptions, RunReport, StorePlan
from facepipe.schemas.synth import SynthConfig
from facepipe.schemas.train import TrainConfig, train_config

__all__ = ["Catalog", "DatasetEntry", "EncoderConfig", "FitConfig", "Intrinsics", "PreprocessConfig", "PreprocessFailure", "ReadLimits", "RenderConfig",
           "RunOptions", "RunReport", "ScanMeta", "SensorPreset", "StorePlan", "SynthConfig", "TrainConfig", "encoder_config",
           "train_config"]
