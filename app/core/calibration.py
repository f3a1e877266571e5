"""Built-in calibration sets: varied everyday English the accuracy guard runs through FP32 and INT8.

Generic text exercises a model's activations (its outlier channels are properties of the model, not of
the data); users with their own data pass it instead (`--calibration FILE`).
"""

from __future__ import annotations

from pathlib import Path

SENTENCES = (
    "I loved every minute of this film, and the ending made me cry.",
    "The service was slow and the food arrived cold.",
    "It's fine, I guess, though nothing about it surprised me.",
    "What a waste of two hours.",
    "The new update fixed the battery problem completely.",
    "My flight was delayed twice and nobody told us why.",
    "An absolute masterpiece of quiet, patient storytelling.",
    "The instructions were confusing, but support answered within minutes.",
    "Not bad for the price.",
    "I would never buy from this company again.",
    "The hotel room was spotless and the staff were lovely.",
    "The plot makes no sense and the acting is wooden.",
    "She finally got the job she had been hoping for.",
    "The package arrived damaged and half the parts were missing.",
    "This is the best coffee I have had in years!",
    "Meh.",
    "The lecture was long, dry and hard to follow.",
    "Our team won the championship after a dramatic final.",
    "The app crashes every time I try to upload a photo.",
    "A warm, funny and surprisingly moving comedy.",
    "Prices went up again this quarter, and customers noticed.",
    "The museum's new wing opens to the public on Saturday.",
    "He apologised, but the damage was already done.",
    "Honestly, the sequel is better than the original.",
    "The soup was too salty and the bread was stale.",
    "I can't recommend this enough; it changed how I work.",
    "Traffic was terrible, so we missed the first act.",
    "The garden looks beautiful after the spring rain.",
    "Customer service kept me on hold for an hour.",
    "It is neither as funny nor as clever as it thinks it is.",
    "The river flooded the lower streets overnight.",
    "Scientists announced a new treatment for the disease on Monday.",
    "The concert was loud, crowded and absolutely wonderful.",
    "I expected more from such a famous director.",
    "Delivery was quick and the product works as described.",
    "The characters are thin, but the visuals are stunning.",
    "Nothing happens for the first forty minutes.",
    "Her performance alone is worth the ticket.",
    "The shoes fell apart after a week.",
    "We had a great time and will definitely come back.",
    "The report says unemployment fell to its lowest level in a decade.",
    "It's a clumsy, overlong mess with a few good jokes.",
    "The laptop is light, fast and the screen is gorgeous.",
    "I regret signing up for this course.",
    "The weather in Paris was perfect all week.",
    "A bold, original debut from a gifted young writer.",
    "The meeting has been moved to Thursday afternoon.",
    "Terrible acoustics ruined an otherwise decent show.",
    "The kids loved it, and so did we.",
    "Battery life is disappointing compared with the old model.",
    "The novel drags in the middle but the last chapters are gripping.",
    "Thank you so much for your help yesterday!",
    "The refund never arrived, despite three emails.",
    "A thoughtful documentary that asks hard questions.",
    "The city council approved the new bike lanes.",
    "This phone is overpriced and underpowered.",
    "Great value, friendly staff, and a lovely view.",
    "I'm not sure what the point of the last scene was.",
    "The bridge will be closed for repairs until June.",
    "Funny, smart and never condescending to its audience.",
    "The pizza was burnt and the delivery driver was rude.",
    "Our guide was knowledgeable and made the tour fun.",
    "The film is visually striking but emotionally empty.",
    "Sales of electric cars doubled last year.",
    "I've read better, but I've also read much worse.",
    "The update broke my favourite feature.",
    "What a lovely surprise to find this little café.",
    "The dialogue is clunky and the pacing is off.",
    "Students will return to classrooms next month.",
    "A triumph: tender, honest and beautifully shot.",
    "The printer jams constantly and the ink costs a fortune.",
    "Everything about the wedding was perfect.",
    "This season is weaker than the last two.",
    "The company reported record profits in the third quarter.",
    "The soundtrack is forgettable, the story even more so.",
    "Easy to set up and it just works.",
    "I found the ending confusing and unsatisfying.",
    "The library extended its opening hours for exams.",
    "The staff went out of their way to help my elderly mother.",
    "Two hours of my life I will never get back.",
    "The restaurant is small but the food is exceptional.",
    "Nobody in the audience laughed at the jokes.",
    "Researchers found the vaccine effective in older adults.",
    "It has its moments, but they are few and far between.",
    "Our order was wrong, but they fixed it quickly and kindly.",
    "The sequel lacks the charm and energy of the original.",
    "The train was clean, on time and comfortable.",
    "I can't stop listening to this album.",
    "The website is slow and keeps logging me out.",
    "A gentle, unhurried film about friendship and loss.",
    "The storm knocked out power to thousands of homes.",
    "Overall a pleasant stay, though the breakfast was average.",
    "The book is dull, repetitive and far too long.",
    "He scored twice in the second half to win the match.",
    "Brilliant cast, sharp script, and a great ending.",
    "The headphones are comfortable but the sound is muddy.",
    "The new policy takes effect at the start of next year.",
    "I was bored from start to finish.",
    "The children's section of the museum is fantastic.",
    "Check-in took forever and our room wasn't ready.",
)

QA_EXAMPLES = (
    ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
     "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. Locally nicknamed "
     "'La dame de fer', it was constructed as the centrepiece of the 1889 World's Fair.",
     ("Who is the Eiffel Tower named after?", "When was the tower built?", "Where is the Eiffel Tower?",
      "What was the tower the centrepiece of?")),
    ("Photosynthesis is the process by which green plants use sunlight to make food from carbon dioxide and water. "
     "It takes place mainly in the leaves, inside organelles called chloroplasts, which contain the green pigment "
     "chlorophyll. Oxygen is released as a by-product.",
     ("What do plants use to make food?", "Where does photosynthesis take place?", "What is released as a by-product?",
      "What pigment do chloroplasts contain?")),
    ("The Amazon River in South America is the largest river by discharge volume of water in the world. It flows "
     "through Peru, Colombia and Brazil before reaching the Atlantic Ocean. The river and its tributaries drain an "
     "area of about seven million square kilometres.",
     ("Which ocean does the Amazon reach?", "Which countries does the Amazon flow through?",
      "How large is the area drained by the river?", "What is the Amazon the largest river by?")),
    ("Marie Curie was a Polish and naturalised-French physicist and chemist who conducted pioneering research on "
     "radioactivity. She was the first woman to win a Nobel Prize, the first person to win a Nobel Prize twice, and "
     "the only person to win a Nobel Prize in two scientific fields.",
     ("What did Marie Curie research?", "What nationality was Marie Curie?", "What was she the first woman to win?",
      "How many times did she win a Nobel Prize?")),
    ("The company said on Tuesday that its quarterly revenue rose 12 percent to 4.2 billion dollars, driven by "
     "strong demand for its cloud services. Its chief executive, Ana Torres, said the firm would hire 2,000 new "
     "engineers next year, mostly in Lisbon and Toronto.",
     ("How much did revenue rise?", "Who is the chief executive?", "How many engineers will the firm hire?",
      "What drove the growth?", "Where will most engineers be hired?")),
    ("The Great Wall of China is a series of fortifications built across the historical northern borders of ancient "
     "Chinese states. Several walls were built from as early as the 7th century BC; the best-known sections were "
     "built by the Ming dynasty between 1368 and 1644.",
     ("Which dynasty built the best-known sections?", "When were the earliest walls built?",
      "Where was the wall built?")),
)


def with_fragments(sentences) -> list[str]:
    """Sentences plus their halves and middles: fragments sit near decision boundaries, where INT8 flips first."""
    out = list(sentences)
    for s in sentences:
        words = s.split()
        if len(words) >= 6:
            n = len(words)
            out += [" ".join(words[: n // 2]), " ".join(words[n // 2:]), " ".join(words[n // 4: 3 * n // 4])]
    return out


# The guard runs every calibration example through FP32 and then INT8. On a large model the whole built-in
# set would make that check most of `convert`'s time, so it is thinned evenly to this many weight
# multiply-adds (about 3 s of FP32 on two laptop cores): MiniLM-sized models keep every example, BERT-base
# about a third. A user's own calibration file is always used whole.
BUILT_IN_BUDGET = 2.5e11
MAX_TOKENS = 256  # calibration examples are cut to this length


def token_budget(spec) -> int:
    """How many calibration tokens of the built-in set the guard runs for this model."""
    per_token = spec.num_layers * (4 * spec.hidden_size ** 2 + 2 * spec.hidden_size * spec.intermediate_size)
    return int(BUILT_IN_BUDGET // max(per_token, 1))


def _thin(feeds: list, budget: int) -> list:
    """Evenly spaced feeds with about `budget` real tokens in all (every feed when they fit)."""
    total = sum(int(f["attention_mask"].sum()) for f in feeds)
    if total <= budget:
        return feeds
    keep = max(1, len(feeds) * budget // total)
    return [feeds[i * len(feeds) // keep] for i in range(keep)]


def build_calibration(folder, spec, *, file: Path | None = None, examples: list | None = None,
                      description: str = ""):
    """Calibration feeds for the model in `folder`, one example each: the task's built-in examples, the user's
    `file`, or `examples` as the task takes them (texts, (text, pair) or (question, context) tuples).

    One example per feed, as the app runs INT8: dynamic INT8 takes one activation range per call.
    """
    from app.core.quantize import Calibration
    from app.core.tasks import get_task
    from app.core.tasks.tokenizer import load_tokenizer

    task = get_task(spec.task)
    built_in = file is None and examples is None
    if examples is None:
        examples, description = task.calibration_examples(file)
    tokenizer = load_tokenizer(folder, spec)
    feeds = task.calibration_feeds(tokenizer, spec, examples, min(MAX_TOKENS, tokenizer.max_length))
    description = description or f"{len(feeds)} examples"
    if built_in:
        kept = _thin(feeds, token_budget(spec))
        if len(kept) < len(feeds):
            description = description.replace("built-in, ", f"built-in, {len(kept)} of ") + " (sized to the model)"
            feeds = kept
    return Calibration(feeds=feeds, description=description)
