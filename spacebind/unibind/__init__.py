"""UniBind on a fused space: knowledge bases of class descriptions, class centres, the UniBind model."""
from spacebind.unibind.model import UniBind

__all__ = ["UniBind"]
