"""NDA: nonparametric data attribution for diffusion models.

Which training images shaped a generated image, and where — from the data alone (SPEC §1).

    >>> import nda
    >>> scores = nda.score(train, queries, nda.NDAConfig(patch_size=5))   # (Q, N), higher = proponent
"""

__version__ = "0.1.0"

from .config import NDAConfig  # noqa: E402
from .errors import NDAError  # noqa: E402
from .images import ImageSet, load_images  # noqa: E402
from .attribution import AttributionResult, NDAIndex, score  # noqa: E402
from . import benchmarks  # noqa: E402
from .eval.lds import lds  # noqa: E402

__all__ = ["NDAConfig", "NDAError", "NDAIndex", "AttributionResult", "ImageSet", "load_images", "score", "lds", "benchmarks", "__version__"]
