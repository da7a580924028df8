"""User profiles (paper section 3.1): `profile = [summary of the user's history ‖ the k items closest to the input]`.

- `prompt`: what the summarizer LLM is asked, and how its answer is tidied;
- `summarizers`: that prompt sent to a local transformers model or an OpenAI-compatible server (`hyperpeft.llm`);
- `cache`: the summaries in SQLite, so that a rerun never pays twice;
- `retrieval`: BM25 (`bm25s`) over the user's own history, the row's `input` being the query;
- `builder`: `ProfileBuilder`, each row's profile text, or an ablation of the paper's Table 5 (`MODES`).

A row that carries a `profile_text` (e.g. demographics) uses it as the summary, with no LLM call.
"""

from .builder import HISTORY_HEADER, MODES, RETRIEVED_HEADER, ProfileArguments, ProfileBuilder, build_profiles
from .cache import SummaryCache, SummaryKey, default_cache_path
from .prompt import PROMPT_VERSION, SYSTEM_PROMPT, build_summary_prompt, format_items
from .retrieval import retrieve
from .summarizers import OpenAISummarizer, Summarizer, SummarizerError, TransformersSummarizer, make_summarizer

__all__ = [
    "HISTORY_HEADER",
    "MODES",
    "PROMPT_VERSION",
    "RETRIEVED_HEADER",
    "SYSTEM_PROMPT",
    "OpenAISummarizer",
    "ProfileArguments",
    "ProfileBuilder",
    "Summarizer",
    "SummarizerError",
    "SummaryCache",
    "SummaryKey",
    "TransformersSummarizer",
    "build_profiles",
    "build_summary_prompt",
    "default_cache_path",
    "format_items",
    "make_summarizer",
    "retrieve",
]
