"""Chat formatting: the model's own chat_template (jinja2, Hugging Face
conventions) when jinja2 is installed, else a built-in Llama 3 format that
gives the same tokens for plain system/user/assistant messages."""
from __future__ import annotations

import datetime
from typing import Any, Dict, List, Optional

_ROLES = ("system", "user", "assistant", "ipython", "tool")


def check_messages(messages) -> List[Dict[str, str]]:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content'")
        if not isinstance(m["role"], str) or m["role"] not in _ROLES:
            raise ValueError(f"messages[{i}]['role'] = {m['role']!r}; use one of {', '.join(_ROLES)}")
        if not isinstance(m["content"], str):
            raise TypeError(f"messages[{i}]['content'] must be a str")
    return list(messages)


def today() -> str:
    return datetime.date.today().strftime("%d %b %Y")


def builtin_llama3(messages, add_generation_prompt: bool = True, date_string: Optional[str] = None,
                   bos_token: str = "<|begin_of_text|>") -> str:
    """The Llama 3.1/3.2 Instruct template for plain messages (no tools)."""
    date_string = date_string or today()
    msgs = list(messages)
    system = ""
    if msgs and msgs[0]["role"] == "system":
        system = msgs[0]["content"].strip()
        msgs = msgs[1:]
    out = [bos_token, "<|start_header_id|>system<|end_header_id|>\n\n",
           "Cutting Knowledge Date: December 2023\n", f"Today Date: {date_string}\n\n", system, "<|eot_id|>"]
    for m in msgs:
        out.append(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>")
    if add_generation_prompt:
        out.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(out)


def _token_text(cfg: Dict[str, Any], key: str, default: str) -> str:
    v = cfg.get(key, default)
    if isinstance(v, dict):
        v = v.get("content", default)
    return v if isinstance(v, str) else default


def render_jinja(template: str, messages, cfg: Dict[str, Any], add_generation_prompt: bool,
                 date_string: Optional[str]) -> str:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        import json

        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    kw = dict(messages=messages, add_generation_prompt=add_generation_prompt,
              bos_token=_token_text(cfg, "bos_token", "<|begin_of_text|>"),
              eos_token=_token_text(cfg, "eos_token", "<|eot_id|>"))
    if date_string is not None:
        kw["date_string"] = date_string
    return env.from_string(template).render(**kw)


def render_chat(messages, tokenizer_config: Dict[str, Any], tokenizer=None, add_generation_prompt: bool = True,
                date_string: Optional[str] = None, use_jinja: Optional[bool] = None) -> str:
    """The prompt text for a conversation. use_jinja None: the model's template
    when jinja2 is installed and the model has one, else the built-in format."""
    messages = check_messages(messages)
    template = tokenizer.chat_template if tokenizer is not None else None
    if template is None:
        t = tokenizer_config.get("chat_template") if tokenizer_config else None
        template = t if isinstance(t, str) else None
    if use_jinja is None:
        try:
            import jinja2  # noqa: F401

            use_jinja = template is not None
        except ImportError:
            use_jinja = False
    if use_jinja:
        if template is None:
            raise ValueError("use_jinja=True but the model has no chat_template")
        return render_jinja(template, messages, tokenizer_config or {}, add_generation_prompt, date_string)
    return builtin_llama3(messages, add_generation_prompt, date_string,
                          _token_text(tokenizer_config or {}, "bos_token", "<|begin_of_text|>"))
