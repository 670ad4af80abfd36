"""d4c: data-free quantization of CLIP models (D4C, arXiv 2511.15411) and its baselines."""

__version__ = "0.1.0"

import warnings as _warnings

# clip-anytorch imports pkg_resources (hence setuptools<81); its deprecation notice is noise here.
_warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
