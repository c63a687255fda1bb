"""class_embeddings averages the NORMALISED prompt embeddings: a prompt embedding with a larger
norm must not pull its class centre toward itself."""
import torch
import torch.nn.functional as F

from spacebind.evaluation.metrics import class_embeddings


def test_prompt_norms_do_not_weigh_the_class_mean() -> None:
    prompts = torch.tensor([[10.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 0.5]])  # 2 classes × 2 templates
    centres = class_embeddings(prompts, 2)
    s = 2 ** -0.5
    torch.testing.assert_close(centres, torch.tensor([[s, s], [s, s]]))
    # same as on unit prompts
    torch.testing.assert_close(centres, class_embeddings(F.normalize(prompts, dim=-1), 2))
