import textwrap
from pathlib import Path

import pytest

SPACE = """\
name: tiny
d_model: 32
n_layers: {choice: [1, 2]}
layers:
  mixer: {choice: [deltanet, swa, hyena, attn], per_layer: true}
  channel: glu
  window: 8
blocks:
  deltanet: {heads: 2}
  swa: {heads: 2}
  attn: {heads: 2}
  hyena: {filter_width: 8}
"""


@pytest.fixture
def write_study(tmp_path):
    """Write a tiny study (and its space) into tmp_path; keyword arguments replace whole top-level sections."""

    def write(trials=4, concurrency=2, extra="", space=SPACE, tokens=2048, sampler="random") -> Path:
        (tmp_path / "space.yaml").write_text(space)
        study = f"""\
        name: t
        space: space.yaml
        proxy: {{tokens: {tokens}, seq_len: 32, batch_size: 8, evals: 2, eval_tokens: 1024, device: cpu, timing_steps: 1}}
        objectives: [{{bits_per_byte: min}}, {{train_tokens_per_s: max}}]
        search: {{sampler: {sampler}, seed: 0, trials: {trials}, concurrency: {concurrency}, resources: {{cpu: 1}}}}
        """
        path = tmp_path / "study.yaml"
        path.write_text(textwrap.dedent(study) + extra)
        return path

    return write
