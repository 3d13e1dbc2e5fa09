"""SAVA core: contracts, registry, recipes, the paper's stages, losses, metric maths, run directories.

Importing ``sava_core`` does not import torch; the modules that need it import it themselves.
"""

__version__ = "0.1.0"
