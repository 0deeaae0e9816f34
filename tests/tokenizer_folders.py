"""Tokenizer folders built by the tests (nothing downloaded): a byte-level BPE trained with the
`tokenizers` library on text made here (accents, CJK, emoji), wrapped in transformers'
PreTrainedTokenizerFast, written with save_pretrained, plus a generation_config.json, in three
chat-template families modelled on the real checkpoints: ChatML (Qwen2.5-Instruct), Llama 3.x
headers, DeepSeek-R1 (with the hub's quirks). `make_folder(family, path)` builds one.
"""
import json
import pathlib

# ---------------------------------------------------------------- data

CORPUS = [
    "Hello world! The quick brown fox jumps over the lazy dog. 0123456789 + - * = ( ) ?",
    "Café, naïve, résumé, Ångström, façade, jalapeño, über, déjà vu.",
    "你好，世界。中文分词测试：今天天气很好，我们去公园散步吧。",
    "日本語のテキストも少し。한국어 문장도 있습니다.",
    "Emoji time 😀🎉🚀👍 and more 🤖 robots ❤️.",
    "Let me think step by step. First, 3 + 4 = 7. So the answer is 7.",
    "You are a helpful assistant. Please reason step by step, and put your final answer within \\boxed{}.",
    "def f(x):\n    return x * 2\n\n\nprint(f(21))\n",
] * 8

CONVERSATIONS = {
    "system_user": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "What is 3 + 4?"},
    ],
    "user_only": [{"role": "user", "content": "Hello there!"}],
    "multi_turn": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Count to three."},
        {"role": "assistant", "content": "1, 2, 3."},
        {"role": "user", "content": "Thanks"},
    ],
    "unicode": [
        {"role": "user", "content": "Café naïve — 你好，世界 😀🎉"},
        {"role": "assistant", "content": "Ça va ! 今天天气很好 🚀"},
        {"role": "user", "content": "  spaces around  \n"},
    ],
    "think": [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "<think>\n2 + 2 = 4, easy.\n</think>\n\nThe answer is 4."},
        {"role": "user", "content": "And 3 + 3?"},
    ],
}

TEXTS = [
    "Hello world!",
    " leading space and trailing  ",
    "Café naïve résumé",
    "你好，世界。",
    "Emoji 😀🎉 ok",
    "line one\n\nline two\tTab",
    "",
    "The answer is 7 .",
    "don 't it 's",
]

QWEN_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

LLAMA3_TEMPLATE = """{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

R1_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='', is_first_sp=true) %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}"
    "{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %}"
    "{%- else %}{% set ns.system_prompt = ns.system_prompt + '\\n\\n' + message['content'] %}{%- endif %}"
    "{%- endif %}{%- endfor %}"
    "{{ bos_token }}{{ ns.system_prompt }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is not none %}"
    "{% set content = message['content'] %}{% if '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}"
    "{%- endfor -%}"
    "{% if add_generation_prompt %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"
)

BOS_R1, EOS_R1 = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"


def _added_token_dict(content, normalized=False):
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": normalized,
            "rstrip": False, "single_word": False}


def _train(special, *, qwen_pretok=False, bos=None, added=()):
    """A byte-level BPE (`tokenizers.Tokenizer`) trained on CORPUS; `special` become special added tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    if qwen_pretok:  # Qwen2.5's pipeline: NFC, a split regex, then byte-level without its own regex
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
                                 behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=list(special), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    if added:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in added])
    if bos is not None:  # Llama 3 / DeepSeek: the post-processor prepends BOS
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                          special_tokens=[(bos, tok.token_to_id(bos))]),
        ])
    return tok


def _write_json(path, obj):
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _make_chatml(d):
    from transformers import PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend = _train(special, qwen_pretok=True)
    hf = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                 additional_special_tokens=["<|im_start|>", "<|im_end|>"], chat_template=QWEN_TEMPLATE,
                                 clean_up_tokenization_spaces=False, split_special_tokens=False)
    hf.save_pretrained(d)
    _write_json(d / "generation_config.json", {
        "bos_token_id": backend.token_to_id("<|endoftext|>"), "do_sample": True,
        "eos_token_id": [backend.token_to_id("<|im_end|>"), backend.token_to_id("<|endoftext|>")],
        "pad_token_id": backend.token_to_id("<|endoftext|>"), "temperature": 0.7})
    return {"eos": ["<|im_end|>", "<|im_end|>", "<|endoftext|>"], "pad": "<|endoftext|>", "bos": None}


def _make_llama3(d):
    from transformers import PreTrainedTokenizerFast

    special = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
               "<|eot_id|>", "<|finetune_right_pad_id|>"]
    backend = _train(special, bos="<|begin_of_text|>")
    hf = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                 chat_template=LLAMA3_TEMPLATE, clean_up_tokenization_spaces=True)
    hf.save_pretrained(d)
    ids = {t: backend.token_to_id(t) for t in special}
    _write_json(d / "generation_config.json", {
        "bos_token_id": ids["<|begin_of_text|>"],
        "eos_token_id": [ids["<|end_of_text|>"], ids["<|eom_id|>"], ids["<|eot_id|>"]],
        "temperature": 0.6, "top_p": 0.9})
    return {"eos": ["<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"], "pad": None, "bos": "<|begin_of_text|>"}


def _make_r1(d):
    """DeepSeek-R1 style, with the hub's quirks: tokenizer_class LlamaTokenizerFast over a byte-level
    tokenizer.json, add_bos_token true, special tokens as AddedToken dicts, a special_tokens_map.json and
    no added_tokens_decoder (transformers' legacy path), and the template under tokenizer_config's key."""
    from transformers import PreTrainedTokenizerFast

    special = [BOS_R1, EOS_R1, "<｜User｜>", "<｜Assistant｜>", "<｜▁pad▁｜>"]
    backend = _train(special, bos=BOS_R1, added=("<think>", "</think>"))
    hf = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS_R1, eos_token=EOS_R1, pad_token=EOS_R1)
    hf.save_pretrained(d)
    (d / "chat_template.jinja").unlink(missing_ok=True)
    _write_json(d / "tokenizer_config.json", {
        "add_bos_token": True, "add_eos_token": False, "bos_token": _added_token_dict(BOS_R1, normalized=True),
        "clean_up_tokenization_spaces": False, "eos_token": _added_token_dict(EOS_R1, normalized=True),
        "legacy": True, "model_max_length": 16384, "pad_token": _added_token_dict(EOS_R1, normalized=True),
        "sp_model_kwargs": {}, "unk_token": None, "tokenizer_class": "LlamaTokenizerFast",
        "chat_template": R1_TEMPLATE})
    _write_json(d / "special_tokens_map.json", {
        "bos_token": {"content": BOS_R1, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
        "eos_token": {"content": EOS_R1, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False},
        "pad_token": {"content": EOS_R1, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}})
    _write_json(d / "generation_config.json", {
        "bos_token_id": backend.token_to_id(BOS_R1), "eos_token_id": backend.token_to_id(EOS_R1),
        "do_sample": True, "temperature": 0.6, "top_p": 0.95})
    return {"eos": [EOS_R1], "pad": EOS_R1, "bos": BOS_R1}


FAMILIES = {"chatml": _make_chatml, "llama3": _make_llama3, "r1": _make_r1}


def make_folder(family: str, path) -> dict:
    """Writes a tokenizer folder of `family` (chatml | llama3 | r1) into `path`; returns its expected
    eos / pad / bos tokens."""
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return FAMILIES[family](path)
