"""The routers' training loss (`router_loss`) against its formula, computed independently: (1) the
mean symmetric InfoNCE over every modality pair of the batch, plus (2) the text regret — for each
modality m paired with text, the routed text's symmetric InfoNCE with m above that of the best
single text candidate. A modality on one tuple of a batch takes part in no pair and must not crash
the routers' BatchNorm. Validation (`mean_pair_recall`) counts a partner shared by several tuples
as correct for each."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from toy_experts import table_expert

from spacebind.bonds.linear import LinearMap
from spacebind.bonds.route import RouteData, RoutedSpace, RouterConfig, mean_pair_recall, router_loss
from spacebind.bonds.router import Router

N = 6
TEMPERATURE = 0.1


def space() -> RoutedSpace:
    """Target T (text, image, dim 8) with member A (text, audio, dim 6) remapped by a random linear head."""
    head = LinearMap(6, 8)
    with torch.no_grad():
        head.weight.copy_(torch.randn(6, 8, generator=torch.Generator().manual_seed(3)))
        head.bias.zero_()
    return RoutedSpace(table_expert("T", 8, ("text", "image"), 1), [table_expert("A", 6, ("text", "audio"), 2)],
                       {"A": head.eval()})


def leaf_rows() -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    unit = lambda dim: F.normalize(torch.randn(N, dim, generator=g), dim=-1)  # noqa: E731
    return {"text": {"T": unit(8), "A": unit(6)}, "image": {"T": unit(8)}, "audio": {"A": unit(6)}}


class Rows:
    """A split's candidates and router inputs, from fixed leaf embeddings."""

    def __init__(self, routed: RoutedSpace, leaves: dict[str, dict[str, torch.Tensor]]) -> None:
        self.routed, self.leaves = routed, leaves

    def gather(self, m: str, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        leaf = {name: emb[rows] for name, emb in self.leaves[m].items()}
        return self.routed.candidates(m, leaf), self.routed.router_input(m, leaf)


def tuples(routed: RoutedSpace, text_rows: int = N) -> RouteData:
    rows = {m: torch.arange(N) for m in ("text", "image", "audio")}
    rows["text"] = torch.where(torch.arange(N) < text_rows, torch.arange(N), -1)
    return RouteData(np.zeros((N, 2), dtype=np.uint64), rows, Rows(routed, leaf_rows()))


def symmetric_nce(a: torch.Tensor, b: torch.Tensor) -> float:
    logits = a @ b.T / TEMPERATURE
    target = torch.arange(len(a))
    return 0.5 * float(F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def text_router() -> Router:
    torch.manual_seed(0)
    router = Router(8 + 6, 2, (8, 4))
    torch.nn.init.normal_(router.net[-1].weight)  # trained-looking: the candidates' weights differ
    return router.eval()


def test_router_loss_is_the_pairwise_alignment_plus_the_text_regret() -> None:
    routed, router = space(), text_router()
    config = RouterConfig(temperature=TEMPERATURE, decoupling=1.0)
    with torch.no_grad():
        got = float(router_loss(routed, {"text": router}, tuples(routed), torch.arange(N), config))
        alignment = float(router_loss(routed, {"text": router}, tuples(routed), torch.arange(N),
                                      config.model_copy(update={"decoupling": 0.0})))
        leaves = leaf_rows()
        cands = routed.candidates("text", leaves["text"])  # [N, 2, 8]: T's own text, A's remapped
        weights = torch.softmax(10.0 * router(routed.router_input("text", leaves["text"])), dim=-1)
        emb = {"text": F.normalize((weights.unsqueeze(-1) * cands).sum(1), dim=-1),
               "image": F.normalize(routed.candidates("image", leaves["image"])[:, 0], dim=-1),
               "audio": F.normalize(routed.candidates("audio", leaves["audio"])[:, 0], dim=-1)}
    expected_alignment = np.mean([symmetric_nce(emb[a], emb[b])
                                  for a, b in (("text", "image"), ("text", "audio"), ("image", "audio"))])
    singles = F.normalize(cands, dim=-1)
    regret = np.mean([max(0.0, symmetric_nce(emb["text"], emb[m]) - min(symmetric_nce(singles[:, k], emb[m])
                                                                        for k in range(2)))
                      for m in ("image", "audio")])
    assert alignment == pytest.approx(expected_alignment, rel=1e-5)
    assert regret > 0.01  # the check below tests the regret, not a zero
    assert got - alignment == pytest.approx(regret, rel=1e-4)


def test_a_modality_on_one_tuple_of_a_batch_takes_part_in_no_pair() -> None:
    routed, router = space(), text_router().train()
    config = RouterConfig(temperature=TEMPERATURE)
    one = router_loss(routed, {"text": router}, tuples(routed, text_rows=1), torch.arange(N), config)
    none = router_loss(routed, {"text": router}, tuples(routed, text_rows=0), torch.arange(N), config)
    assert torch.isfinite(one) and float(one) == pytest.approx(float(none))


class Fixed:
    """Candidates given directly: one per row (K = 1), no router input."""

    def __init__(self, rows: dict[str, torch.Tensor]) -> None:
        self.rows = rows

    def gather(self, m: str, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rows[m][rows].unsqueeze(1), torch.zeros(len(rows), 0)


def test_router_validation_counts_a_partner_mined_for_several_seeds_as_correct() -> None:
    """Texts 0 and 1 both mined audio clip 0: either tuple's clip is the right answer for both."""
    g = torch.Generator().manual_seed(0)
    clips = F.normalize(torch.randn(3, 8, generator=g), dim=-1)
    audio_row = torch.tensor([0, 0, 1, 2])
    texts = F.normalize(clips[audio_row] + 0.05 * torch.randn(4, 8, generator=g), dim=-1)
    data = RouteData(np.zeros((4, 2), dtype=np.uint64), {"text": torch.arange(4), "audio": audio_row},
                     Fixed({"text": texts, "audio": clips}))
    scales = SimpleNamespace(scales={"text": 1.0, "audio": 1.0})
    assert mean_pair_recall(scales, {}, data) == 1.0
    data.rows["audio"] = torch.tensor([0, 0, 1, -1])  # the fourth text has no clip: left out
    assert mean_pair_recall(scales, {}, data) == 1.0


def test_validation_recall_is_the_mean_of_both_directions() -> None:
    """Ro14: the routers' val score is the mean R@1 over each modality pair in *both* directions."""
    from types import SimpleNamespace

    from spacebind.bonds.route import mean_pair_recall

    text = torch.eye(3)
    audio = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]])  # clip 1 is nearer text 0 than text 1
    sims = text @ audio.T
    t2a = float((sims.argmax(dim=1) == torch.arange(3)).float().mean())
    a2t = float((sims.argmax(dim=0) == torch.arange(3)).float().mean())
    assert t2a != a2t
    data = RouteData(np.zeros((3, 2), dtype=np.uint64), {"text": torch.arange(3), "audio": torch.arange(3)},
                     Fixed({"text": text, "audio": audio}))
    scales = SimpleNamespace(scales={"text": 1.0, "audio": 1.0})
    assert abs(mean_pair_recall(scales, {}, data) - (t2a + a2t) / 2) < 1e-6
