"""The MwT baseline now lives in ``moda_core.methods.mwt``; this module keeps the old import path."""
from moda_core.methods.mwt import ALPHA, BETA, MaskGenerator, MwT, gated_points, mwt_loss, record_masks, to_mwt

__all__ = ["ALPHA", "BETA", "MaskGenerator", "MwT", "gated_points", "mwt_loss", "record_masks", "to_mwt"]
