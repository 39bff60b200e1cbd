"""What runs the stages: Zarr stores, the Dask job driver, the store lock, seeding, output names,
and the source and template resolvers every command uses."""

from facepipe.pipeline.lazy import lazy_exports

_EXPORTS = {
    "open_group": ".store",
    "verify_store": ".store",
    "store_state": ".store",
    "Source": ".sources",
    "resolve_source": ".sources",
    "resolve_template": ".sources",
    "sample_rng": ".seeding",
    "run_store_job": ".jobs",
    "store_lock": ".lock",
    "output_names": ".naming",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
