"""Sample-quality metrics measured in a feature space the project trains itself (no downloads).

    features.py   FeatureNet: a small CNN classifier per dataset; its penultimate layer is the
                  feature space (cached under <data dir>/features/<dataset>/)
    fid.py        FID, KID and k-NN precision/recall between two feature sets
"""

from .features import FeatureNet, FeatureRecipe, features_dir, load_feature_net, train_feature_net
from .fid import compare, fid, frechet_distance, kid, precision_recall

__all__ = ["FeatureNet", "FeatureRecipe", "features_dir", "load_feature_net", "train_feature_net",
           "compare", "fid", "frechet_distance", "kid", "precision_recall"]
