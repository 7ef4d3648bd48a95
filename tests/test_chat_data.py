"""Conversation data for chat fine-tuning: four shapes read and checked with errors naming the file
and line, and a loss mask that covers exactly each assistant reply plus the token that ends its turn,
for templates without {% generation %} markers (five template families, tokenizers built here)."""

import json

import pytest

from tunesmith.errors import DataError
from tunesmith.modalities.conversations import (
    CHATML,
    IGNORE,
    TemplateProblem,
    detect_format,
    encode_conversation,
    read_conversations,
)

# Templates as the model families ship them (simplified only where dates or tools would come in).
SMOLLM2 = (  # ChatML with a default system prompt when the conversation has none (SmolLM2-Instruct)
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
MISTRAL = (  # no generation prompt at all: the reply follows [/INST] directly, closed by eos
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}"
)
PHI3 = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + "
    "'<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
FAMILIES = {  # template, its end-of-turn token, whether it takes a system message
    "smollm2-chatml": (SMOLLM2, "<|im_end|>", True),
    "llama3": (LLAMA3, "<|eot_id|>", True),
    "gemma": (GEMMA, "<end_of_turn>", False),
    "mistral": (MISTRAL, "</s>", False),
    "phi3": (PHI3, "<|end|>", True),
}
SPECIALS = [
    "<s>",
    "</s>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
]
CONV = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "How do I reset my password?"},
    {"role": "assistant", "content": "Open settings, choose Account, then Reset password."},
    {"role": "user", "content": "And if I forgot my email?"},
    {"role": "assistant", "content": "Write to support with your order number.\nThey reply within a day."},
]


@pytest.fixture(scope="module")
def tokenizer_for():
    """A byte-level BPE tokenizer trained here on a few sentences, with every family's markers as special
    tokens; pad is eos, as SmolLM2's GGUF declares."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [m["content"] for m in CONV] * 20 + ["system user assistant model INST"] * 20
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )

    def make(template):
        t = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="</s>")
        t.chat_template = template
        return t

    return make


def _runs(enc):
    """The contiguous stretches of loss-bearing tokens."""
    runs, cur = [], []
    for i, lab in zip(enc.input_ids, enc.labels):
        if lab != IGNORE:
            assert lab == i
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    return runs + ([cur] if cur else [])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_mask_covers_exactly_each_reply_and_its_end_of_turn_token(tokenizer_for, family):
    template, eot, takes_system = FAMILIES[family]
    tok = tokenizer_for(template)
    conv = CONV if takes_system else CONV[1:]
    enc = encode_conversation(tok, conv, ref="t")
    replies = [m["content"] for m in conv if m["role"] == "assistant"]
    assert [tok.decode(r) for r in _runs(enc)] == [r + eot for r in replies]
    # the end-of-turn token is trained even though it is also the pad token (mistral: eot is eos is pad)
    assert tok.convert_tokens_to_ids(eot) in [lab for lab in enc.labels if lab != IGNORE]
    assert tok.decode(enc.input_ids) == tok.apply_chat_template(conv, tokenize=False)


def test_train_on_last_and_all(tokenizer_for):
    tok = tokenizer_for(SMOLLM2)
    last = encode_conversation(tok, CONV, train_on="last")
    assert [tok.decode(r) for r in _runs(last)] == [CONV[-1]["content"] + "<|im_end|>"]
    every = encode_conversation(tok, CONV, train_on="all")
    assert every.labels == every.input_ids
    with pytest.raises(ValueError, match="train_on"):
        encode_conversation(tok, CONV, train_on="user")


def test_too_long_is_cut_at_a_turn_boundary_or_dropped(tokenizer_for):
    tok = tokenizer_for(SMOLLM2)
    whole = encode_conversation(tok, CONV)
    first_turn = encode_conversation(tok, CONV[:3])
    cut = encode_conversation(tok, CONV, max_length=len(whole.input_ids) - 5)
    assert cut.truncated and cut.input_ids == first_turn.input_ids[: len(cut.input_ids)]
    assert [tok.decode(r) for r in _runs(cut)] == [CONV[2]["content"] + "<|im_end|>"]
    assert encode_conversation(tok, CONV, max_length=10) is None  # not even the first reply fits
    # only the newline after the last <|im_end|> lost: every reply is kept, nothing truncated
    tail = encode_conversation(tok, CONV, max_length=len(whole.input_ids) - 1)
    assert not tail.truncated and _runs(tail) == _runs(whole)
    assert not encode_conversation(tok, CONV, max_length=len(whole.input_ids)).truncated


def test_template_problems_are_clear_errors(tokenizer_for):
    with pytest.raises(TemplateProblem, match="rejects this conversation.*System role not supported"):
        encode_conversation(tokenizer_for(GEMMA), CONV, ref="chat.jsonl line 3")
    rewrites = (  # drops the content of every assistant turn but the last (as reasoning templates do)
        "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
        "{{ '<|im_start|>assistant\n<|im_end|>\n' }}"
        "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    with pytest.raises(TemplateProblem, match="line 3: the chat template renders message 3 differently"):
        encode_conversation(tokenizer_for(rewrites), CONV, ref="chat.jsonl line 3")
    plain = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
    with pytest.raises(TemplateProblem, match="no special end-of-turn token"):
        encode_conversation(tokenizer_for(plain), CONV)


def test_a_base_model_takes_the_builtin_chatml(tokenizer_for):
    tok = tokenizer_for(None)
    enc = encode_conversation(tok, CONV, template=CHATML)
    assert [tok.decode(r) for r in _runs(enc)] == [
        m["content"] + "<|im_end|>" for m in CONV if m["role"] == "assistant"
    ]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" if not isinstance(r, str) else r for r in rows))
    return path


def test_the_four_shapes_are_detected_and_read(tmp_path):
    msgs = read_conversations(_write(tmp_path / "m.jsonl", [{"messages": CONV}]))
    assert msgs.format == "messages" and msgs.conversations == [CONV]
    share = read_conversations(
        _write(
            tmp_path / "s.jsonl",
            [
                {
                    "conversations": [
                        {"from": "system", "value": "Be brief."},
                        {"from": "human", "value": "hi"},
                        {"from": "gpt", "value": "hello"},
                    ]
                }
            ],
        )
    )
    assert share.format == "sharegpt"
    assert [m["role"] for m in share.conversations[0]] == ["system", "user", "assistant"]
    (tmp_path / "pc.csv").write_text('prompt,completion\n"Capital of France?",Paris.\n')
    pc = read_conversations(tmp_path / "pc.csv")
    assert pc.format == "prompt-completion" and pc.conversations[0][-1] == {"role": "assistant", "content": "Paris."}
    alpaca = read_conversations(
        _write(
            tmp_path / "a.jsonl",
            [
                {"instruction": "Translate", "input": "chat", "output": "cat"},
                {"instruction": "Say hi", "input": "", "output": "hi"},
            ],
        )
    )
    assert alpaca.format == "alpaca"
    assert (
        alpaca.conversations[0][0]["content"] == "Translate\n\nchat"
        and alpaca.conversations[1][0]["content"] == "Say hi"
    )
    assert len(alpaca.subset([1])) == 1 and alpaca.dedup_keys()[0] != alpaca.dedup_keys()[1]
    # named explicitly, the shape is not guessed
    with pytest.raises(DataError, match="`messages` must be a non-empty list"):
        read_conversations(tmp_path / "a.jsonl", fmt="messages")


@pytest.mark.parametrize(
    "lines,message",
    [
        (['{"messages": [}\n'], "line 1: not valid JSON"),
        (["\n", '{"messages": [{"role": "bot", "content": "x"}]}\n'], "line 2: message 1 has unknown role 'bot'"),
        ([{"messages": [{"role": "user", "content": "hi"}]}], "line 1: no assistant message"),
        (
            [{"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "x"}]}],
            "message 1 \\(user\\) is empty",
        ),
        (
            [
                {
                    "messages": [
                        {"role": "user", "content": "a"},
                        {"role": "system", "content": "b"},
                        {"role": "assistant", "content": "c"},
                    ]
                }
            ],
            "system message may only come first",
        ),
        (
            [{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "c"}]}],
            "must be text, got int",
        ),
        ([{"text": "hi", "label": "x"}], "cannot tell the conversation format .*data.format"),
        (["[1, 2]\n"], "line 1: a JSON list"),
    ],
)
def test_bad_conversations_name_the_file_and_line(tmp_path, lines, message):
    p = _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DataError, match=message):
        read_conversations(p)


def test_detect_format_prefers_explicit_conversation_fields():
    assert detect_format(["messages", "prompt", "completion"], "x") == "messages"
    assert detect_format(["instruction", "input", "output"], "x") == "alpaca"


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("kept", [False, True])
def test_packed_batch_has_the_loss_and_gradients_of_the_same_conversations_padded(family, attn, kept):
    """Several conversations per row, positions restarting, no attention across a boundary: the loss
    and every gradient equal those of one conversation per padded row (fp32, 1e-5). `kept`: the packed
    batch's logits are computed only where a labelled token follows, as training does."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from tunesmith.modalities.conversations import (
        collate_packed,
        collate_padded,
        next_token_loss,
        positions_to_keep,
    )

    torch.manual_seed(0)
    if family == "llama":
        cfg = LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
        )
        model = LlamaForCausalLM._from_config(cfg, attn_implementation=attn)
    else:
        cfg = GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=64)
        model = GPT2LMHeadModel._from_config(cfg, attn_implementation=attn)
    model.float().eval()  # no dropout: the two forward passes must be comparable
    g = torch.Generator().manual_seed(1)
    examples = []
    for n in (7, 12, 5, 9):
        ids = torch.randint(3, 64, (n,), generator=g).tolist()
        mask = torch.rand(n, generator=g) < 0.6
        examples.append({"input_ids": ids, "labels": [i if m else IGNORE for i, m in zip(ids, mask.tolist())]})

    def loss_and_grads(batch, keep=False):
        model.zero_grad()
        labels = batch.pop("labels")
        if keep:
            batch["logits_to_keep"] = positions_to_keep(labels)
        logits = model(**batch, use_cache=False).logits
        if keep:  # one row of logits per labelled token predicted, nothing for the rest
            assert logits.shape == (int((labels[:, 1:] != IGNORE).sum()), 64)
        loss = next_token_loss(logits, labels)
        loss.backward()
        return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    packed = collate_packed(examples, pad_id=0, max_tokens=20)
    assert packed["input_ids"].shape[0] == 2  # four conversations in two rows
    lp, gp = loss_and_grads(packed, keep=kept)
    lu, gu = loss_and_grads(collate_padded(examples, pad_id=0))
    assert torch.allclose(lp, lu, atol=1e-5, rtol=1e-5)
    assert gp.keys() == gu.keys()
    for k in gp:
        assert torch.allclose(gp[k], gu[k], atol=1e-5, rtol=1e-4), k
