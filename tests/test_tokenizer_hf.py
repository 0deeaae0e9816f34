"""r1jax.data.tokenizer / chat_template against transformers, on tokenizer folders the tests build.

Three chat-template families modelled on the real checkpoints (written here, nothing downloaded):
ChatML (Qwen2.5-Instruct), Llama 3.x headers, DeepSeek-R1. Each folder holds a byte-level BPE trained
on text made here (accents, CJK, emoji), wrapped in transformers' PreTrainedTokenizerFast and written
with save_pretrained, plus a generation_config.json. transformers is only the reference.
"""
import json
import pathlib
import shutil

import pytest

from r1jax.data.chat_template import ChatTemplateError, render_chat_template
from r1jax.data.tokenizer import Tokenizer, TokenizerFilesError, load_tokenizer

from tokenizer_folders import (  # noqa: E402
    CONVERSATIONS, TEXTS, QWEN_TEMPLATE, BOS_R1, EOS_R1, FAMILIES, _train, _write_json,
)



@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def folders(tmp_path_factory, transformers):
    """{family: (folder, expected special tokens)}, built once for the module."""
    root = tmp_path_factory.mktemp("hf_tok")
    out = {}
    for name, make in FAMILIES.items():
        d = root / name
        d.mkdir()
        out[name] = (d, make(d))
    return out


@pytest.fixture(scope="module")
def pairs(folders, transformers):
    """{family: (r1jax Tokenizer, transformers tokenizer)} loaded from the same folder."""
    return {name: (load_tokenizer(d), transformers.AutoTokenizer.from_pretrained(str(d)))
            for name, (d, _) in folders.items()}


def _hf_chat(hf, conv, gen, **kw):
    text = hf.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen, **kw)
    ids = hf.apply_chat_template(conv, tokenize=True, add_generation_prompt=gen, return_dict=False, **kw)
    return text, list(ids)


# ---------------------------------------------------------------- chat templates vs transformers


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("conv_name", list(CONVERSATIONS))
@pytest.mark.parametrize("gen", [False, True])
def test_chat_template_matches_transformers(pairs, family, conv_name, gen):
    ours, hf = pairs[family]
    conv = CONVERSATIONS[conv_name]
    kw = {"date_string": "01 Jan 2025"} if family == "llama3" else {}
    text, ids = _hf_chat(hf, conv, gen, **kw)
    assert ours.apply_chat_template(conv, add_generation_prompt=gen, tokenize=False, **kw) == text
    assert ours.apply_chat_template(conv, add_generation_prompt=gen, **kw) == ids
    assert ours.decode(ids) == hf.decode(ids)


def test_family_specific_rendering(pairs):
    chatml, _ = pairs["chatml"]
    text = chatml.apply_chat_template(CONVERSATIONS["user_only"], add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are Qwen")  # default system prompt
    assert text.endswith("<|im_start|>user\nHello there!<|im_end|>\n<|im_start|>assistant\n")
    llama, _ = pairs["llama3"]
    ids = llama.apply_chat_template(CONVERSATIONS["system_user"], date_string="01 Jan 2025")
    assert ids[0] == llama.bos_token_id and ids.count(llama.bos_token_id) == 1  # BOS once, from the template
    r1, _ = pairs["r1"]
    text = r1.apply_chat_template(CONVERSATIONS["think"], add_generation_prompt=True, tokenize=False)
    assert text == (f"{BOS_R1}<｜User｜>What is 2 + 2?<｜Assistant｜>\n\nThe answer is 4.{EOS_R1}"
                    "<｜User｜>And 3 + 3?<｜Assistant｜><think>\n")
    ids = r1.apply_chat_template(CONVERSATIONS["think"], add_generation_prompt=True)
    assert ids[-2:] == [r1.token_to_id("<think>"), r1.token_to_id("\u010a")]  # "<think>" then byte-level "\n"


def test_llama3_template_defaults_and_tools(pairs):
    ours, hf = pairs["llama3"]
    conv = CONVERSATIONS["multi_turn"]
    # no date_string: the template calls strftime_now (same day for both renders)
    assert ours.apply_chat_template(conv, tokenize=False) == hf.apply_chat_template(conv, tokenize=False)
    ours_q, hf_q = pairs["chatml"]
    tools = [{"type": "function", "function": {"name": "météo", "description": "Wetter für eine Stadt 🌦 <b>&</b>",
                                               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    for conv in (CONVERSATIONS["system_user"], CONVERSATIONS["user_only"]):
        text, ids = _hf_chat(hf_q, conv, True, tools=tools)
        assert ours_q.apply_chat_template(conv, add_generation_prompt=True, tokenize=False, tools=tools) == text
        assert ours_q.apply_chat_template(conv, add_generation_prompt=True, tools=tools) == ids
        assert "météo" in text and "<b>&</b>" in text  # tojson: no ASCII or HTML escaping


# ---------------------------------------------------------------- encode / decode vs transformers


@pytest.mark.parametrize("family", list(FAMILIES))
def test_encode_decode_match_transformers(pairs, family):
    ours, hf = pairs[family]
    specials = [t for t in (ours.bos_token, ours.eos_token, ours.pad_token) if t]
    texts = TEXTS + [f"{specials[0]}inline special{specials[-1]} tokens", "<think>x</think>y"]
    for text in texts:
        for add in (True, False):
            ids = ours.encode(text, add_special_tokens=add)
            assert ids == hf.encode(text, add_special_tokens=add), (text, add)
            for skip in (False, True):
                assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip)
    assert ours.encode("Hello") == hf.encode("Hello")  # the defaults agree
    assert ours.vocab_size == len(hf)
    every_id = list(range(ours.vocab_size))
    for skip in (False, True):
        assert ours.decode(every_id, skip_special_tokens=skip) == hf.decode(every_id, skip_special_tokens=skip)
    for i in (0, 5, ours.vocab_size - 1):
        assert ours.id_to_token(i) == hf.convert_ids_to_tokens(i)
        assert ours.token_to_id(ours.id_to_token(i)) == i
    assert ours.token_to_id("surely-not-a-token-☃") is None


def test_qwen_hub_layout_matches_transformers(tmp_path, folders, transformers):
    """Qwen2.5-Instruct's hub layout: tokenizer_class Qwen2Tokenizer, config.json model_type qwen2 (so transformers 5
    loads its Qwen2Tokenizer class, which rebuilds the Qwen pipeline), added_tokens_decoder, bos/unk null, the
    template under the config key."""
    d = tmp_path / "qwen_hub"
    shutil.copytree(folders["chatml"][0], d)
    (d / "chat_template.jinja").unlink()
    added = json.loads((d / "tokenizer.json").read_text())["added_tokens"]
    _write_json(d / "tokenizer_config.json", {
        "add_bos_token": False, "add_prefix_space": False,
        "added_tokens_decoder": {str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in added},
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "bos_token": None, "chat_template": QWEN_TEMPLATE,
        "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>", "errors": "replace",
        "model_max_length": 131072, "pad_token": "<|endoftext|>", "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer", "unk_token": None})
    _write_json(d / "config.json", {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]})
    ours, hf = load_tokenizer(d), transformers.AutoTokenizer.from_pretrained(str(d))
    assert type(hf).__name__ == "Qwen2Tokenizer"
    assert ours.special_tokens_map == hf.special_tokens_map and ours.vocab_size == len(hf)
    for conv in CONVERSATIONS.values():
        for gen in (False, True):
            text, ids = _hf_chat(hf, conv, gen)
            assert ours.apply_chat_template(conv, add_generation_prompt=gen, tokenize=False) == text
            assert ours.apply_chat_template(conv, add_generation_prompt=gen) == ids
    for text in TEXTS + ["<|im_start|>user\nhi<|im_end|><|endoftext|>"]:
        ids = ours.encode(text)
        assert ids == hf.encode(text)
        assert ours.decode(ids, skip_special_tokens=True) == hf.decode(ids, skip_special_tokens=True)


CONFIG_VARIANTS = {
    "split_special_tokens": (lambda c: c.update(split_special_tokens=True), None),
    # model-specific *_token keys become special tokens and template variables
    "model_specific_tokens": (lambda c: c.update(image_token="<|im_start|>", foo_token={
        "__type": "AddedToken", "content": "Hello", "lstrip": False, "rstrip": False, "normalized": False,
        "single_word": False, "special": False}), None),
    "extra_special_tokens_dict": (lambda c: c.update(extra_special_tokens={"image_token": "<|im_start|>"}), None),
    # tokenizer.json's padding gives the pad_token default
    "pad_from_tokenizer_json": (lambda c: c.pop("pad_token"), lambda t: t.enable_padding(pad_id=1, pad_token="<|im_start|>")),
}


@pytest.mark.parametrize("variant", list(CONFIG_VARIANTS))
def test_config_variants_match_transformers(tmp_path, folders, transformers, variant):
    edit_config, edit_backend = CONFIG_VARIANTS[variant]
    d = tmp_path / variant
    shutil.copytree(folders["chatml"][0], d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    edit_config(cfg)
    _write_json(d / "tokenizer_config.json", cfg)
    if edit_backend is not None:
        from tokenizers import Tokenizer as Backend

        backend = Backend.from_file(str(d / "tokenizer.json"))
        edit_backend(backend)
        backend.save(str(d / "tokenizer.json"))
    (d / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ m.content }}{% endfor %}|{{ image_token }}|{{ foo_token }}|{{ pad_token }}")
    ours, hf = load_tokenizer(d), transformers.AutoTokenizer.from_pretrained(str(d))
    assert ours.special_tokens_map == hf.special_tokens_map and ours.pad_token_id == hf.pad_token_id
    conv = [{"role": "user", "content": "Hello <|im_start|> x<|endoftext|>"}]
    assert ours.apply_chat_template(conv, tokenize=False) == hf.apply_chat_template(conv, tokenize=False)
    assert ours.apply_chat_template(conv) == list(hf.apply_chat_template(conv, return_dict=False))
    for text in ("Hello <|im_start|> x<|endoftext|>", "Hello world"):
        ids = ours.encode(text)
        assert ids == hf.encode(text)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip)


def test_bos_added_by_post_processor_only(pairs):
    llama, hf = pairs["llama3"]
    assert llama.encode("Hi")[0] == llama.bos_token_id and llama.encode("Hi", add_special_tokens=False)[0] != llama.bos_token_id
    r1, hf_r1 = pairs["r1"]
    assert r1.encode("Hi")[:1] == [r1.bos_token_id] == hf_r1.encode("Hi")[:1]
    chatml, _ = pairs["chatml"]
    assert chatml.encode("Hi") == chatml.encode("Hi", add_special_tokens=False)  # no BOS, no post-processor


def test_special_token_ids(pairs, folders):
    for name, (ours, hf) in pairs.items():
        expected = folders[name][1]
        assert ours.eos_token_ids == tuple(dict.fromkeys(ours.token_to_id(t) for t in expected["eos"]))
        assert ours.eos_token_id == hf.eos_token_id == ours.eos_token_ids[0]
        assert ours.eos_token == hf.eos_token
        assert ours.pad_token == expected["pad"] and ours.pad_token_id == hf.pad_token_id
        assert ours.bos_token == expected["bos"] and ours.bos_token_id == hf.bos_token_id
        assert ours.special_tokens_map == hf.special_tokens_map
        assert all(isinstance(i, int) for i in ours.eos_token_ids)
    llama = pairs["llama3"][0]
    assert llama.pad_token_id is None  # no pad anywhere
    r1 = pairs["r1"][0]
    assert r1.eos_token_ids == (r1.token_to_id(EOS_R1),)  # int eos_token_id in generation_config, deduplicated


def test_pad_from_generation_config(tmp_path, folders):
    d = tmp_path / "llama_pad"
    shutil.copytree(folders["llama3"][0], d)
    g = json.loads((d / "generation_config.json").read_text())
    g["pad_token_id"] = 5
    _write_json(d / "generation_config.json", g)
    assert load_tokenizer(d).pad_token_id == 5


# ---------------------------------------------------------------- where templates come from


def _same_rendering(a, b, kw=None):
    kw = kw or {}
    for conv in CONVERSATIONS.values():
        for gen in (False, True):
            assert a.apply_chat_template(conv, add_generation_prompt=gen, tokenize=False, **kw) == \
                b.apply_chat_template(conv, add_generation_prompt=gen, tokenize=False, **kw)


def test_template_sources(tmp_path, folders, pairs, transformers):
    src, _ = folders["chatml"]
    assert (src / "chat_template.jinja").is_file()  # transformers 5 save_pretrained writes the jinja file
    ref = pairs["chatml"][0]
    assert ref.chat_template == QWEN_TEMPLATE and ref.has_chat_template
    # 1. under tokenizer_config.json's key (transformers 4.x layout)
    d1 = tmp_path / "key"
    shutil.copytree(src, d1)
    (d1 / "chat_template.jinja").unlink()
    cfg = json.loads((d1 / "tokenizer_config.json").read_text())
    _write_json(d1 / "tokenizer_config.json", {**cfg, "chat_template": QWEN_TEMPLATE})
    t1 = load_tokenizer(d1)
    assert t1.chat_template == QWEN_TEMPLATE
    _same_rendering(t1, transformers.AutoTokenizer.from_pretrained(str(d1)))
    # 2. a list of named templates: "default" is used, "tool_use" when tools are given
    d2 = tmp_path / "list"
    shutil.copytree(d1, d2)
    tool_tpl = "TOOLS{{ tools | length }}{% for m in messages %}|{{ m.content }}{% endfor %}"
    _write_json(d2 / "tokenizer_config.json", {**cfg, "chat_template": [
        {"name": "tool_use", "template": tool_tpl}, {"name": "default", "template": QWEN_TEMPLATE}]})
    t2, h2 = load_tokenizer(d2), transformers.AutoTokenizer.from_pretrained(str(d2))
    _same_rendering(t2, h2)
    conv = CONVERSATIONS["user_only"]
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert t2.apply_chat_template(conv, tokenize=False, tools=tools) == \
        h2.apply_chat_template(conv, tokenize=False, tools=tools) == "TOOLS1|Hello there!"
    # 3. the jinja file wins over the config key
    d3 = tmp_path / "both"
    shutil.copytree(src, d3)
    _write_json(d3 / "tokenizer_config.json", {**cfg, "chat_template": "IGNORED"})
    _same_rendering(load_tokenizer(d3), transformers.AutoTokenizer.from_pretrained(str(d3)))
    # 4. chat_template.json (processor layout), read as a last resort; save() writes chat_template.jinja for transformers
    d4 = tmp_path / "json"
    shutil.copytree(d1, d4)
    _write_json(d4 / "tokenizer_config.json", cfg)
    _write_json(d4 / "chat_template.json", {"chat_template": QWEN_TEMPLATE})
    t4 = load_tokenizer(d4)
    _same_rendering(t4, ref)
    t4.save(tmp_path / "json_saved")
    _same_rendering(transformers.AutoTokenizer.from_pretrained(str(tmp_path / "json_saved")), ref)
    # 5. the tokenizer.json path instead of the folder
    _same_rendering(load_tokenizer(src / "tokenizer.json"), ref)


# ---------------------------------------------------------------- save


@pytest.mark.parametrize("family", list(FAMILIES))
def test_save_copies_files_and_reloads(tmp_path, folders, pairs, transformers, family):
    src, _ = folders[family]
    ours = pairs[family][0]
    out = tmp_path / "saved"
    written = ours.save(out)
    for p in written:
        assert p.read_bytes() == (src / p.relative_to(out)).read_bytes()
    names = {p.name for p in written}
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= names
    hf = transformers.AutoTokenizer.from_pretrained(str(out))
    kw = {"date_string": "01 Jan 2025"} if family == "llama3" else {}
    _same_rendering(ours, hf, kw)
    again = load_tokenizer(out)
    assert again.eos_token_ids == ours.eos_token_ids and again.special_tokens_map == ours.special_tokens_map
    ours.save(src)  # saving onto its own folder is a no-op


def test_from_parts_save_roundtrip(tmp_path, transformers):
    backend = _train(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    config = {"eos_token": "<|im_end|>", "pad_token": {"__type": "AddedToken", "content": "<|endoftext|>",
                                                       "lstrip": False, "normalized": False, "rstrip": False,
                                                       "single_word": False, "special": True},
              "extra_special_tokens": ["<|im_start|>"], "clean_up_tokenization_spaces": False}
    gen = {"eos_token_id": [backend.token_to_id("<|endoftext|>")]}
    ours = Tokenizer.from_parts(backend, config, QWEN_TEMPLATE, gen)
    assert ours.pad_token == "<|endoftext|>" and ours.eos_token_ids == (
        backend.token_to_id("<|im_end|>"), backend.token_to_id("<|endoftext|>"))
    out = tmp_path / "parts"
    ours.save(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "chat_template.jinja", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]
    assert "chat_template" not in json.loads((out / "tokenizer_config.json").read_text())
    hf = transformers.AutoTokenizer.from_pretrained(str(out))
    _same_rendering(ours, hf)
    for conv in CONVERSATIONS.values():
        assert ours.apply_chat_template(conv) == list(hf.apply_chat_template(conv, return_dict=False))
    for text in TEXTS:
        assert ours.encode(text) == hf.encode(text)
    assert ours.special_tokens_map == hf.special_tokens_map
    again = load_tokenizer(out)
    assert again.eos_token_ids == ours.eos_token_ids and again.chat_template == QWEN_TEMPLATE
    with pytest.raises(TokenizerFilesError, match="add_bos_token"):
        Tokenizer.from_parts(backend, {**config, "add_bos_token": True})
    with pytest.raises(TokenizerFilesError, match="twice"):
        Tokenizer.from_parts(backend, {**config, "chat_template": "x"}, "y")


def test_special_token_in_vocab_but_not_added(tmp_path, transformers):
    """transformers promotes a named special token that is a plain vocabulary entry to a special added token
    (matched before pre-tokenization, dropped by skip_special_tokens); so does r1jax."""
    from tokenizers import Tokenizer as Backend, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[UNK]", "<sep>", "hello", "world", "<", ">", "sep", "!"])}
    backend = Backend(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    ours = Tokenizer.from_parts(backend, {"sep_token": "<sep>", "unk_token": "[UNK]", "eos_token": "!",
                                          "clean_up_tokenization_spaces": True})
    ours.save(tmp_path / "wl")
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "wl"))
    for text in ("hello<sep>world!", "hello <sep> world !", "<sep>", "hello world hello"):
        ids = ours.encode(text)
        assert ids == hf.encode(text)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip)
    assert ours.encode("hello<sep>world") == [2, 1, 3]
    # clean_up_tokenization_spaces applies to this WordLevel model (transformers skips it for BPE only)
    assert ours.decode([2, 3, 7]) == "hello world!" == hf.decode([2, 3, 7])


def test_add_bos_token_in_config_is_ignored_like_transformers(tmp_path, folders, transformers):
    d = tmp_path / "no_pp"
    shutil.copytree(folders["chatml"][0], d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    _write_json(d / "tokenizer_config.json", {**cfg, "bos_token": "<|endoftext|>", "add_bos_token": True,
                                              "add_eos_token": True, "tokenizer_class": "LlamaTokenizerFast"})
    ours, hf = load_tokenizer(d), transformers.AutoTokenizer.from_pretrained(str(d))
    assert ours.encode("Hello world") == hf.encode("Hello world") == ours.encode("Hello world", add_special_tokens=False)


# ---------------------------------------------------------------- the template engine itself


def test_engine_features_match_transformers(transformers):
    from transformers.utils.chat_template_utils import _normalize_chat_messages, render_jinja_template

    template = (
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% if loop.index > 3 %}{% break %}{% endif %}"
        "{% if m.role == 'skip' %}{% continue %}{% endif %}{% set ns.n = ns.n + 1 %}"
        "{% generation %}[{{ m.role }}:{{ m.content }}]{% endgeneration %}"
        "{% if m.thinking is defined %}(t={{ m.thinking }}/{{ m.reasoning_content }}){% endif %}{% endfor %}"
        "n={{ ns.n }} {{ dict(a=1) | tojson }} {{ extra | tojson(indent=1) }} {{ messages[0] | tojson }}"
        " tools={{ tools }} docs={{ documents }} bos={{ bos_token }} gen={{ add_generation_prompt }}"
        " {{ 'x' if nothing is defined else 'undefined' }}"
    )
    msgs = [{"role": "user", "content": "é😀", "none_key": None}, {"role": "skip", "content": "s"},
            {"role": "assistant", "content": "ok", "reasoning": "because"}, {"role": "user", "content": "late"}]
    kwargs = {"extra": {"k": ["v", 1.5, True, None]}, "bos_token": "<s>"}
    # apply_chat_template's flow: normalize (drops None-valued keys), then render
    expected, _ = render_jinja_template(conversations=[_normalize_chat_messages(msgs)], chat_template=template,
                                        add_generation_prompt=True, **kwargs)
    got = render_chat_template(template, msgs, add_generation_prompt=True, **kwargs)
    assert got == expected[0]
    assert "(t=because/because)" in got and "none_key" not in got
    # trim_blocks / lstrip_blocks: indented block tags without "-" leave no whitespace behind
    layout = "start\n  {% for m in messages %}\n    {% if m.role != 'skip' %}\n  {{ m.content }}\n    {% endif %}\n  {% endfor %}\nend\n"
    expected, _ = render_jinja_template(conversations=[_normalize_chat_messages(msgs)], chat_template=layout)
    assert render_chat_template(layout, msgs) == expected[0] == "start\n  é😀\n  ok\n  late\nend"


def test_template_errors_name_the_source(tmp_path, folders):
    d = tmp_path / "bad_tpl"
    shutil.copytree(folders["chatml"][0], d)
    (d / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }\n", encoding="utf-8")
    tok = load_tokenizer(d)  # templates compile lazily; loading still works
    with pytest.raises(ChatTemplateError, match=r"chat_template\.jinja.*does not compile"):
        tok.apply_chat_template(CONVERSATIONS["user_only"])
    (d / "chat_template.jinja").write_text(
        "line one\n{% if messages|length > 1 %}{{ raise_exception('only one message please') }}{% endif %}ok",
        encoding="utf-8")
    tok = load_tokenizer(d)
    assert tok.apply_chat_template(CONVERSATIONS["user_only"], tokenize=False) == "line one\nok"
    with pytest.raises(ChatTemplateError, match=r"chat_template\.jinja.*line 2.*only one message please"):
        tok.apply_chat_template(CONVERSATIONS["multi_turn"])
    (d / "chat_template.jinja").write_text("{% set ns = namespace() %}{% set ns._x = 1 %}", encoding="utf-8")
    with pytest.raises(ChatTemplateError, match="underscore"):
        load_tokenizer(d).apply_chat_template(CONVERSATIONS["user_only"])
    (d / "chat_template.jinja").unlink()
    with pytest.raises(ChatTemplateError, match="no chat template"):
        load_tokenizer(d).apply_chat_template(CONVERSATIONS["user_only"])
    assert not load_tokenizer(d).has_chat_template and load_tokenizer(d).chat_template is None
    tok = load_tokenizer(folders["chatml"][0])
    with pytest.raises(ValueError, match="empty conversation"):
        tok.apply_chat_template([])
    with pytest.raises(TypeError, match="continue_final_message"):
        tok.apply_chat_template(CONVERSATIONS["user_only"], continue_final_message=True)


# ---------------------------------------------------------------- bad folders (no transformers needed)


@pytest.fixture
def plain_folder(tmp_path):
    """A minimal valid folder written without transformers."""
    d = tmp_path / "plain"
    d.mkdir()
    backend = _train(["<|endoftext|>", "<|im_end|>"])
    backend.save(str(d / "tokenizer.json"))
    _write_json(d / "tokenizer_config.json", {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                                              "chat_template": "{{ messages[0].content }}"})
    _write_json(d / "generation_config.json", {"eos_token_id": 0})
    assert load_tokenizer(d).eos_token_ids == (1, 0)
    return d


def _edit_json(path, **changes):
    obj = json.loads(path.read_text())
    obj.update(changes)
    _write_json(path, obj)


def test_bad_folders_name_the_file(tmp_path, plain_folder):
    d = plain_folder
    with pytest.raises(TokenizerFilesError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TokenizerFilesError, match=r"has no tokenizer\.json"):
        load_tokenizer(empty)

    def expect(match):
        return pytest.raises(TokenizerFilesError, match=match)

    good_tok = (d / "tokenizer.json").read_text()
    (d / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with expect(r"tokenizer\.json is not valid JSON"):
        load_tokenizer(d)
    (d / "tokenizer.json").write_text('{"model": 3}', encoding="utf-8")
    with expect(r"tokenizer\.json is not a valid tokenizers"):
        load_tokenizer(d)
    (d / "tokenizer.json").write_text(good_tok, encoding="utf-8")

    cfg = (d / "tokenizer_config.json").read_text()
    (d / "tokenizer_config.json").write_text("[1, 2", encoding="utf-8")
    with expect(r"tokenizer_config\.json is not valid JSON"):
        load_tokenizer(d)
    (d / "tokenizer_config.json").write_text("[1, 2]", encoding="utf-8")
    with expect(r"tokenizer_config\.json must hold a JSON dict"):
        load_tokenizer(d)
    (d / "tokenizer_config.json").write_text(cfg, encoding="utf-8")
    _edit_json(d / "tokenizer_config.json", eos_token="<|not_there|>")
    with expect(r"tokenizer_config\.json\['eos_token'\] = '<\|not_there\|>' is not in the vocabulary"):
        load_tokenizer(d)
    (d / "tokenizer_config.json").write_text(cfg, encoding="utf-8")
    _edit_json(d / "tokenizer_config.json", pad_token={"__type": "AddedToken", "contents": "x"})
    with expect(r"tokenizer_config\.json\['pad_token'\].*unknown AddedToken fields"):
        load_tokenizer(d)
    (d / "tokenizer_config.json").write_text(cfg, encoding="utf-8")
    _edit_json(d / "tokenizer_config.json", extra_special_tokens=["<|endoftext|>", "<|missing|>"])
    with expect(r"extra_special_tokens\[1\]'\] = '<\|missing\|>' is not in the vocabulary"):
        load_tokenizer(d)
    (d / "tokenizer_config.json").write_text(cfg, encoding="utf-8")
    _edit_json(d / "tokenizer_config.json", chat_template=42)
    with expect(r"tokenizer_config\.json\['chat_template'\] must be a string"):
        load_tokenizer(d)
    (d / "tokenizer_config.json").write_text(cfg, encoding="utf-8")

    _edit_json(d / "generation_config.json", eos_token_id=[0, 10 ** 9])
    with expect(r"generation_config\.json\['eos_token_id'\] = 1000000000 is outside the vocabulary"):
        load_tokenizer(d)
    _edit_json(d / "generation_config.json", eos_token_id="<|im_end|>")
    with expect(r"generation_config\.json\['eos_token_id'\] must be an integer"):
        load_tokenizer(d)
    (d / "generation_config.json").write_text("{", encoding="utf-8")
    with expect(r"generation_config\.json is not valid JSON"):
        load_tokenizer(d)
    (d / "generation_config.json").unlink()
    _write_json(d / "special_tokens_map.json", {"eos_token": {"content": "<|nope|>"}})
    with expect(r"special_tokens_map\.json\['eos_token'\] = '<\|nope\|>' is not in the vocabulary"):
        load_tokenizer(d)
    (d / "special_tokens_map.json").unlink()
    tok = load_tokenizer(d)
    assert tok.eos_token_ids == (tok.eos_token_id,) and tok.pad_token_id == tok.token_to_id("<|endoftext|>")
    assert tok.apply_chat_template([{"role": "user", "content": "Hi 😀"}], tokenize=False) == "Hi 😀"
    (tmp_path / "afile").write_text("x")
    with expect("is a file"):
        tok.save(tmp_path / "afile")


def test_no_transformers_at_import():
    import subprocess
    import sys

    code = ("import sys, r1jax.data.tokenizer, r1jax.data.chat_template; "
            "print('transformers' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=pathlib.Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["False", "False"]
