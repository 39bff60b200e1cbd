"""The data plane: readers, preprocessing, stores and jobs (numpy, open3d, dask, zarr)."""
