"""Data: the sources a model is fitted to and the transforms applied on the way.

Sources return tensors on the training device (:mod:`pvae.data.idx`: MNIST, Fashion-MNIST, KMNIST);
transforms turn grey levels into what a likelihood models (:mod:`pvae.data.transforms`). Nothing
here imports the rest of pvae.
"""

from pvae.data.idx import (
    DATASETS,
    DEBIAN_FASHION_MNIST,
    DataNotFoundError,
    ImageData,
    check_images,
    load_data,
    load_images,
    resolve_data_dir,
)
from pvae.data.transforms import (
    BINARIZATIONS,
    EVAL_BINARIZATION_SEED,
    Binarization,
    binarize,
    dequantize,
    fixed_eval_set,
    labelled_subset,
)

__all__ = [
    "DATASETS",
    "BINARIZATIONS",
    "EVAL_BINARIZATION_SEED",
    "Binarization",
    "DEBIAN_FASHION_MNIST",
    "DataNotFoundError",
    "ImageData",
    "resolve_data_dir",
    "load_images",
    "load_data",
    "binarize",
    "dequantize",
    "fixed_eval_set",
    "labelled_subset",
    "check_images",
]
