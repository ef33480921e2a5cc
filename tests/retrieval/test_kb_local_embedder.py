"""The offline neural embedder (extra ``local-embeddings``): loads from the package, no hub."""

from __future__ import annotations

import numpy as np
import pytest

from mtdesk.core.errors import ConfigError
from mtdesk.core.settings import Settings
from mtdesk.retrieval.embedders import LocalEmbedder, embedder_for


@pytest.mark.skipif(not LocalEmbedder.available(), reason="the local-embeddings extra is not installed")
async def test_meaning_not_just_words_brings_texts_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # proves no model hub is needed
    embedder = embedder_for("local", Settings())
    vecs = await embedder.embed(["my bicycle has a flat tyre", "fix a punctured bike wheel", "buy a gift card"])
    assert vecs.shape == (3, 384) and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.2


@pytest.mark.skipif(LocalEmbedder.available(), reason="the extra is installed here")
def test_without_the_extra_local_says_how_to_install_it() -> None:
    with pytest.raises(ConfigError, match="local-embeddings"):
        embedder_for("local", Settings())


def test_an_unknown_embedder_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as err:
        embedder_for("word2vec", Settings())
    assert err.value.variable == "MTDESK_KB_EMBEDDER"
