"""Word tokenizer (normalisation, unknown words, truncation, serialisation) and text encoder."""

import json
import warnings

import pytest
import torch

from minisora.config import TextConfig
from minisora.text import PAD_ID, UNK_ID, TextEncoder, Tokenizer
from minisora.world import split_words

CAPTIONS = ["A small red circle moves to the left.", "a large blue square bounces up-left",
            "Two shapes: a green triangle and a yellow diamond, both still!"]


def test_split_words_lowercases_and_strips_punctuation():
    assert split_words("A Red, circle!  moves... UP-LEFT") == ["a", "red", "circle", "moves", "up-left"]
    assert split_words("  ?! ") == []


def test_round_trip_and_special_ids():
    tok = Tokenizer.from_captions(CAPTIONS)
    assert tok.vocab[:2] == ["<pad>", "<unk>"] and PAD_ID == 0 and UNK_ID == 1
    ids, mask = tok.encode(["A RED circle, moves up-left.", "still"], max_len=8)
    assert ids.shape == mask.shape == (2, 8) and ids.dtype == torch.long and mask.dtype == torch.bool
    assert mask.sum(dim=1).tolist() == [5, 1]
    assert (ids[~mask] == PAD_ID).all()
    assert tok.decode(ids, mask) == ["a red circle moves up-left", "still"]
    # Ids do not depend on the order of the captions.
    assert Tokenizer.from_captions(reversed(CAPTIONS)).vocab == tok.vocab
    assert Tokenizer.from_words(["Red", "circle", "red"]).vocab == ["<pad>", "<unk>", "circle", "red"]


def test_unknown_words_warn_by_name():
    tok = Tokenizer.from_captions(CAPTIONS)
    assert tok.unknown_words("a purple zebra, a red zebra") == ["purple", "zebra"]
    with pytest.warns(UserWarning, match=r"unknown words \['purple', 'zebra'\]"):
        ids, mask = tok.encode(["a purple zebra", "a red zebra"], max_len=6)
    assert ids[0, 1] == UNK_ID and ids[0, 2] == UNK_ID and mask[0, :3].all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok.encode(["a red circle"], max_len=6)  # known words: no warning


def test_an_unknown_word_is_named_once_however_often_it_repeats():
    tok = Tokenizer.from_captions(CAPTIONS)
    with pytest.warns(UserWarning, match=r"unknown words \['zebra'\] are not"):
        tok.encode(["a zebra zebra", "a red zebra"], max_len=6)


def test_truncation_warns_and_empty_prompt_is_all_padding():
    tok = Tokenizer.from_captions(CAPTIONS)
    with pytest.warns(UserWarning, match="max_len=3.*dropped 'circle moves to the left'"):
        ids, mask = tok.encode("a small red circle moves to the left", max_len=3)
    assert mask.all() and tok.decode(ids) == ["a small red"]
    ids, mask = tok.encode([""], max_len=4)
    assert not mask.any() and (ids == PAD_ID).all()
    with pytest.raises(ValueError, match="max_len"):
        tok.encode("a red circle", max_len=0)


def test_to_dict_from_dict_round_trip_through_json():
    tok = Tokenizer.from_captions(CAPTIONS)
    restored = Tokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert restored.vocab == tok.vocab
    prompts = ["a green triangle bounces", "a blue diamond moves to the left"]
    for a, b in zip(tok.encode(prompts, 10), restored.encode(prompts, 10)):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="tokenizer"):
        Tokenizer.from_dict({"vocab": ["a"]})


def _encoder(seed=0):
    torch.manual_seed(seed)
    return TextEncoder(TextConfig(dim=32, depth=2, heads=4, max_len=8), vocab_size=20).eval()


def test_encoder_shape_and_padding_is_ignored():
    encoder = _encoder()
    ids = torch.tensor([[3, 4, 5, 0, 0, 0, 0, 0], [6, 7, 8, 9, 10, 11, 12, 13]])
    mask = ids != 0
    context = encoder(ids, mask)
    assert context.shape == (2, 8, 32)
    assert (context[0, 3:] == 0).all()
    # Whatever sits in the padded slots, the words' encodings do not change.
    other = ids.clone()
    other[0, 3:] = 17
    assert torch.allclose(encoder(other, mask)[0], context[0], atol=1e-6)
    # ...while changing a real word does.
    other[0, 0] = 17
    assert not torch.allclose(encoder(other, mask)[0, 1:3], context[0, 1:3], atol=1e-4)


def test_a_word_stays_distinct_when_the_rest_of_the_prompt_dominates():
    # Training once made the layers' output so large that, after the final LayerNorm, "left" and
    # "right" came out 2% apart. Simulate that: blow up what the layers write into the residual stream.
    encoder = _encoder()
    with torch.no_grad():
        for layer in encoder.layers:
            layer.linear2.bias.normal_(0.0, 100.0)  # a big vector that does not depend on the words
    ids = torch.tensor([[3, 4, 5, 6], [3, 4, 5, 7]])  # the last word differs
    mask = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        last = encoder(ids, mask)[:, -1]
        # The transformer's half alone has lost the word: without the word's own embedding the test would fail.
        alone = encoder.contextual(ids, mask)[:, -1]
    assert float((last[0] - last[1]).norm() / last[0].norm()) > 0.2
    assert float((alone[0] - alone[1]).norm() / alone[0].norm()) < 0.05


def test_encoder_all_masked_row_gives_zeros_not_nan():
    encoder = _encoder()
    encoder.train()  # the training path must survive dropped prompts too
    ids = torch.tensor([[3, 4, 0, 0], [0, 0, 0, 0]])
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    context = encoder(ids, mask)
    assert torch.isfinite(context).all() and (context[1] == 0).all()
    context.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


def test_encoder_rejects_too_long_input():
    with pytest.raises(ValueError, match="max_len <= 8"):
        _encoder()(torch.zeros(1, 9, dtype=torch.long), torch.ones(1, 9, dtype=torch.bool))
