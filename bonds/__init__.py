"""Composing spaces: bond kinds (`BONDS`: combination, displacement, routed), head types
(`HEADS`: mlp, linear, procrustes, relative, mixture, router), their training on cached
embeddings, pair curation. Every kind and head type registers itself on import."""
from spacebind.bonds import linear, mixture, projector, relative, router  # noqa: F401 - head types register
from spacebind.bonds.bind import BoundSpace, bind, train_bond
from spacebind.bonds.heads import HEADS, head_from_config, register_head
from spacebind.bonds.node import BONDS, BondNode, bond_kinds, register_bond
from spacebind.bonds.route import RoutedSpace, RouterConfig, train_routed

__all__ = ["BONDS", "HEADS", "BondNode", "BoundSpace", "RoutedSpace", "RouterConfig", "bind", "bond_kinds",
           "head_from_config", "register_bond", "register_head", "train_bond", "train_routed"]
