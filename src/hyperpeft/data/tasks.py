"""The personalization tasks hyperpeft knows: metric kind, label set, prompt, and a task description for summaries.

Every loader produces rows of one common schema (see `ROW_COLUMNS`); `TASKS[row["task"]]` says how to prompt for
and score that row. Prompts are short, in the project's own words, and end with an explicit answer format.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CLASSIFICATION, RATING, GENERATION = "classification", "rating", "generation"
METRIC_KINDS = (CLASSIFICATION, RATING, GENERATION)

# Columns of every row, whatever the source. `history` items are {"input": str, "output": str}: what the user saw and
# what they answered (for LaMP-7, where an item is only a tweet, `input` is empty).
ROW_COLUMNS = ("id", "user_id", "task", "metric", "input", "output", "history", "profile_text")


@dataclass(frozen=True)
class Task:
    """
    Args:
        name (`str`): the task's identifier, used in the `task` column.
        metric (`str`): `"classification"`, `"rating"` or `"generation"`.
        instruction (`str`): what the model is asked to do; put before the row's input.
        answer_format (`str`): the last line of every prompt, saying exactly what to answer.
        description (`str`): one sentence on the task, for the profile summarizer.
        labels (`tuple[str, ...]`): the label set of a classification or rating task.
    """

    name: str
    metric: str
    instruction: str
    answer_format: str
    description: str
    labels: tuple[str, ...] = field(default=())

    def prompt(self, text: str) -> str:
        """The full prompt for one input."""
        return f"{self.instruction}\n\n{text.strip()}\n\n{self.answer_format}"


LAMP_2M_TAGS = (
    "sci-fi", "based on a book", "comedy", "action", "twist ending", "dystopia", "dark comedy", "classic",
    "psychology", "fantasy", "romance", "thought-provoking", "social commentary", "violence", "true story",
)  # fmt: skip
LAMP_2N_CATEGORIES = (
    "travel", "education", "parents", "style & beauty", "entertainment", "food & drink", "science & technology",
    "business", "sports", "healthy living", "women", "politics", "crime", "culture & arts", "religion",
)  # fmt: skip
RATINGS = ("1", "2", "3", "4", "5")

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            "LaMP-1", CLASSIFICATION,
            "This author wrote the paper named below. Decide which of the two references they would be more likely "
            "to cite.",
            "Answer with [1] or [2] only.",
            "choosing which of two papers an author cites",
            ("[1]", "[2]"),
        ),
        Task(
            "LaMP-2N", CLASSIFICATION,
            "Put the news article below into the category this journalist would choose.",
            f"Answer with exactly one category from: {', '.join(LAMP_2N_CATEGORIES)}.",
            "assigning a category to the news articles a journalist writes",
            LAMP_2N_CATEGORIES,
        ),
        Task(
            "LaMP-2M", CLASSIFICATION,
            "Tag the movie described below the way this user tags movies.",
            f"Answer with exactly one tag from: {', '.join(LAMP_2M_TAGS)}.",
            "tagging movies with one tag from a fixed list",
            LAMP_2M_TAGS,
        ),
        Task(
            "LaMP-3", RATING,
            "Predict the star rating this user gave with the product review below.",
            "Answer with one digit from 1 to 5.",
            "rating products from 1 to 5 stars alongside a written review",
            RATINGS,
        ),
        Task(
            "LaMP-4", GENERATION,
            "Write a headline for the news article below, in this journalist's style.",
            "Answer with the headline only.",
            "writing headlines for one's own news articles",
        ),
        Task(
            "LaMP-5", GENERATION,
            "Write a title for the paper abstract below, the way this scholar titles papers.",
            "Answer with the title only.",
            "titling one's own scholarly papers",
        ),
        Task(
            "LaMP-7", GENERATION,
            "Rewrite the tweet below the way this user writes tweets.",
            "Answer with the rewritten tweet only.",
            "writing short social-media posts",
        ),
        Task(
            "LongLaMP-abstract", GENERATION,
            "Write the abstract of a paper with the title and key points below, in this author's style.",
            "Answer with the abstract only.",
            "writing abstracts of one's own scholarly papers",
        ),
        Task(
            "LongLaMP-topic", GENERATION,
            "Write a post on the topic below, the way this user writes posts.",
            "Answer with the post only.",
            "writing forum posts on a given topic",
        ),
        Task(
            "LongLaMP-review", GENERATION,
            "Write a product review from the product description and rating below, in this user's voice.",
            "Answer with the review only.",
            "writing product reviews",
        ),
        Task(
            "EC", GENERATION,
            "Read the news article below and write, as this person, a short reaction essay (300 to 800 "
            "characters) about how it makes you feel.",
            "Answer with the essay only.",
            "writing short personal reactions to news articles",
        ),
        Task(
            "reddit", GENERATION,
            "Reply to the message below the way this user would.",
            "Answer with the reply only.",
            "replying to messages in one's own voice",
        ),
    )
}  # fmt: skip


def get_task(name: str) -> Task:
    """The task called `name`, or a `ValueError` listing the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"Unknown task {name!r}; known tasks: {sorted(TASKS)}.") from None


def register_task(task: Task) -> Task:
    """Add a task (e.g. your own data's) so that loaders, prompts and metrics know it; refuses to redefine one."""
    if task.metric not in METRIC_KINDS:
        raise ValueError(f"`metric` should be one of {METRIC_KINDS} but the task {task.name!r} has {task.metric!r}.")
    if task.metric != GENERATION and not task.labels:
        raise ValueError(f"The {task.metric} task {task.name!r} needs its label set in `labels`.")
    existing = TASKS.get(task.name)
    if existing is not None and existing != task:
        raise ValueError(f"A different task called {task.name!r} is already registered.")
    TASKS[task.name] = task
    return task


# Every method sees the same short system message instead of the chat template's default one.
SYSTEM_PROMPT = "Answer in the requested format."


def chat_messages(task: str, text: str, context: str | None = None) -> list[dict[str, str]]:
    """
    The conversation that asks for one row's answer: the task prompt as the user's turn, after the `context` block
    (what a prompt-based method knows about the user) when there is one.

    Example:

    ```python
    >>> chat_messages("LaMP-3", "Broke after a week.", context="This user rates harshly.")[1]["content"][:24]
    'This user rates harshly.'
    ```
    """
    prompt = get_task(task).prompt(text)
    if context:
        prompt = f"{context.strip()}\n\n{prompt}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]
