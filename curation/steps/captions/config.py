"""Captioner configuration (`caption:` section of a job spec; `jobs/caption.yaml` documents it).

Two backends behind one config, both through Ray Data's LLM batch API (`ray.data.llm`):

- `http`: any OpenAI-compatible chat-completions endpoint (vLLM / SGLang `serve`, a hosted API):
  `http.url` (e.g. http://127.0.0.1:8000/v1/chat/completions; `${CURATE_CAPTION_URL}` in the
  spec), `http.model` (the served model name), the API key read from the environment variable
  named by `http.api_key_env` (never from the spec), requests per second, retries, timeout.
- `vllm`: an in-cluster vLLM engine on GPU nodes (`vllm.model_source`: a local weights
  directory; `vllm.engine_kwargs` passed to the engine).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["CaptionConfig", "HttpBackend", "VllmBackend", "captioner_configured"]


@dataclass
class HttpBackend:
    """url: chat-completions URL; model: the served model name; api_key_env: environment
    variable holding the key (sent as `Authorization: Bearer`; unset: no header); qps: request
    rate cap per actor (null: none); retries: extra attempts on 429 / 408 / 5xx / timeouts /
    connection errors (exponential backoff from backoff_s, `Retry-After` honoured); timeout_s:
    per request, seconds; concurrency: requests in flight per actor; actors: parallel request
    actors; batch_size: rows per actor batch; structured_output: send the answer's JSON schema as
    `response_format` (vLLM, SGLang and OpenAI honour it; switch off for servers that reject it)."""

    url: str | None = None
    model: str = "default"
    api_key_env: str = "OPENAI_API_KEY"
    qps: float | None = field(default=None, metadata={"gt": 0})
    retries: int = field(default=3, metadata={"min": 0})
    backoff_s: float = field(default=1.0, metadata={"min": 0})
    timeout_s: float = field(default=120.0, metadata={"gt": 0})
    concurrency: int = field(default=16, metadata={"min": 1})
    actors: int = field(default=1, metadata={"min": 1})
    batch_size: int = field(default=64, metadata={"min": 1})
    structured_output: bool = True


@dataclass
class VllmBackend:
    """model_source: local directory of the VLM's weights (never downloaded at run time);
    engine_kwargs: vLLM engine arguments (max_model_len, tensor_parallel_size, ...);
    concurrency: engine replicas; batch_size: rows per engine batch; accelerator_type: a Ray
    accelerator type to pin the replicas to (null: any GPU)."""

    model_source: str | None = None
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    concurrency: int = field(default=1, metadata={"min": 1})
    batch_size: int = field(default=16, metadata={"min": 1})
    accelerator_type: str | None = None


@dataclass
class CaptionConfig:
    """backend: 'http' or 'vllm'. language: 'en' or 'zh' (captions and tags in that language;
    OCR strings stay in theirs). image_side: longer side of the image sent to the model, px
    (the bytes are re-encoded as JPEG at jpeg_quality; smaller images send faster).
    use_ocr: put the item's OCR strings in the prompt (needs an OCR run); use_meta: put the
    source's alt text and the knowledge-graph entity titles matched from its tags in the prompt.
    max_tokens, temperature: generation settings. limit: caption at most this many pending
    items per run (cost control; null: all)."""

    backend: Literal["http", "vllm"] = "http"
    http: HttpBackend = field(default_factory=HttpBackend)
    vllm: VllmBackend = field(default_factory=VllmBackend)
    language: Literal["en", "zh"] = "en"
    image_side: int = field(default=768, metadata={"min": 64})
    jpeg_quality: int = field(default=90, metadata={"min": 1, "max": 100})
    use_ocr: bool = True
    use_meta: bool = True
    max_tokens: int = field(default=1024, metadata={"min": 1})
    temperature: float = field(default=0.2, metadata={"min": 0})
    limit: int | None = field(default=None, metadata={"min": 1})

    @property
    def model(self) -> str:
        return self.http.model if self.backend == "http" else (self.vllm.model_source or "")

    def producer(self) -> str:
        """What makes a caption: a change re-captions every item."""
        from curation.steps.captions.prompt import PROMPT_VERSION

        return f"{self.backend}:{self.model}|{PROMPT_VERSION}|{self.language}"


def captioner_configured(caption: "CaptionConfig | None") -> bool:
    """Whether the `caption:` section names a captioner (an http url, or vllm weights): what
    the difference captions of edit pairs and the review queue's VLM verifier need."""
    if caption is None:
        return False
    return bool(caption.http.url) if caption.backend == "http" else bool(caption.vllm.model_source)
