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


# Entity-dense news, for named-entity models: which tokens are names, and of what kind, is decided where text is
# full of them (results tables, headlines, datelines, lists of clubs named after their towns), and everyday
# sentences hold few. With only those, the guard passed plain INT8 on minilm-conll at 100% while 3.7% of CoNLL
# sentences changed entities; on these, plain INT8 changes 11 of 114 and the outlier settings 1-2.
NEWS = (
    "SOCCER - LEEDS HOLD CHELSEA TO GOALLESS DRAW AT STAMFORD BRIDGE .",
    "TENNIS - SELES BEATS MARTINEZ TO REACH FINAL IN TOKYO .",
    "GOLF - NORMAN SHOOTS 66 TO LEAD BY TWO IN SYDNEY .",
    "RUGBY UNION - WALES NAME UNCHANGED SIDE TO FACE IRELAND .",
    "CRICKET - PAKISTAN 212-5 AT TEA ON FIRST DAY AGAINST ZIMBABWE .",
    "BASEBALL - ORIOLES EDGE YANKEES 4-3 IN ELEVEN INNINGS .",
    ("Results of German first division matches on Saturday : Bayern Munich 2 Hamburg 1 , Werder Bremen 0 "
     "Schalke 0 , Borussia Dortmund 3 Freiburg 1 ."),
    "Essex 312 and 140-4 ( N. Hussain 61 not out ) ; Kent 289 ( M. Walker 88 , P. Such 5-71 ) .",
    "Standings after Sunday 's games : Ajax 31 points , PSV Eindhoven 29 , Feyenoord 27 , Vitesse Arnhem 22 .",
    ("Leading scorers : 14 - Ronaldo ( Barcelona ) ; 12 - Davor Suker ( Real Madrid ) ; 10 - Meho Kodro ( "
     "Barcelona ) ."),
    "Second round : Michael Chang ( U.S. ) beat Jonas Bjorkman ( Sweden ) 6-3 7-5 .",
    ("Men 's 100 metres : 1. Donovan Bailey ( Canada ) 9.95 seconds 2. Frankie Fredericks ( Namibia ) 9.98 3. "
     "Ato Boldon ( Trinidad ) 10.01 ."),
    "Juventus striker Alessandro Del Piero was ruled out of Sunday 's derby against Torino with a knee injury .",
    "Manchester United manager Alex Ferguson said he would not sell Eric Cantona to Inter Milan .",
    "The Australian Open will be played at Melbourne Park from January 13 .",
    "Newcastle signed the Colombian forward Faustino Asprilla from Parma for seven million pounds .",
    "The Tour de France leader Bjarne Riis of Denmark kept the yellow jersey after the stage to Pamplona .",
    "Kenya 's Moses Kiptanui set a world record in the 3,000 metres steeplechase in Zurich on Wednesday .",
    ("Israeli Prime Minister Benjamin Netanyahu met Palestinian President Yasser Arafat at the Erez crossing "
     "on Wednesday ."),
    ("The European Commission said on Tuesday it would ask EU farm ministers to lift the ban on British beef "
     "exports ."),
    "Russian President Boris Yeltsin underwent heart surgery at the Moscow Cardiology Centre .",
    "U.N. Secretary-General Boutros Boutros-Ghali called for a ceasefire in northern Iraq .",
    "The Bundesbank left its discount rate unchanged at 2.5 percent , a spokesman in Frankfurt said .",
    "Chancellor Helmut Kohl 's Christian Democrats won the state election in Baden-Wuerttemberg .",
    ("Rebels of the Kurdistan Workers Party ( PKK ) attacked a village near the Iraqi border , the Anatolian "
     "news agency said ."),
    "The Dow Jones industrial average closed 12 points higher at 5,733 .",
    "Shares in British Airways rose 8p to 604p after the airline reported higher summer traffic .",
    "Microsoft Corp said it would release a new version of Windows NT early next year .",
    "Daimler-Benz AG posted a first-half net profit of 1.2 billion marks , the Stuttgart-based group said .",
    "The Reserve Bank of India raised the cash reserve ratio for commercial banks by half a point .",
    "Hong Kong 's Hang Seng index fell 1.3 percent in thin trading on Monday .",
    "Greenpeace activists boarded a Shell oil platform in the North Sea on Thursday .",
    ("Police in Lima said Tupac Amaru guerrillas were still holding 72 hostages at the Japanese ambassador 's "
     "residence ."),
    "The Clinton administration urged Congress to approve the chemical weapons treaty before April .",
    "Spanish and Portuguese fishermen protested in Vigo against new quotas set in Brussels .",
    "The Nikkei average ended the morning session down 95.21 points at 20,817.36 .",
    "Belgian police arrested a third suspect in the Dutroux inquiry , the prosecutor in Neufchateau said .",
    "Dole and Kemp campaigned in Ohio while Clinton spoke to union workers in Detroit .",
    "A Turkish Airlines plane made an emergency landing in Ankara after a bomb threat .",
    "The Czech crown firmed against the mark as the central bank in Prague held rates steady .",
    "Sri Lankan troops killed 14 Tamil Tiger rebels in fighting near Kilinochchi , the military said .",
    "South African Foreign Minister Alfred Nzo arrived in Harare for talks with Robert Mugabe .",
    "Oil prices rose in New York as cold weather lifted demand for heating oil in the U.S. Northeast .",
    "Swissair and Austrian Airlines agreed to share routes between Zurich and Vienna .",
    "Scottish Premier Division : Rangers 3 Motherwell 1 , Celtic 2 Hibernian 0 , Aberdeen 1 Dundee United 1 .",
    "Dutch first division : NAC Breda 1 Twente Enschede 2 , Roda JC 0 Heerenveen 0 .",
    "National Hockey League results : Detroit 5 Toronto 2 , Colorado 3 St Louis 3 , Philadelphia 4 Boston 1 .",
    "Glamorgan beat Worcestershire by seven wickets at Cardiff to go top of the table .",
    "The Italian Grand Prix at Monza was won by Michael Schumacher of Ferrari .",
    ("Yugoslav President Slobodan Milosevic accused the opposition Zajedno coalition of trying to destabilise "
     "Serbia ."),
    "The Chicago Bulls beat the Utah Jazz 90-86 behind 38 points from Michael Jordan .",
    "Mexican peso closes at 7.95 per dollar in Mexico City .",
    "Algeria 's Islamic Salvation Front denied responsibility for the attack in Blida .",
    "The World Health Organisation said the Ebola outbreak in Gabon had killed 21 people .",
    "Bosnian Serb leader Radovan Karadzic stepped down as president of the Serb Democratic Party .",
    "Finance Minister Theo Waigel said Germany would meet the Maastricht criteria in 1997 .",
    "The Ukrainian parliament approved a new constitution after an all-night session in Kiev .",
    "Nigerian military ruler Sani Abacha announced a cabinet reshuffle on state radio .",
    "The Wimbledon champion Richard Krajicek withdrew from the ATP Tour World Championship in Hanover .",
    "Iranian President Akbar Hashemi Rafsanjani opened a new railway linking Mashhad and Tajan .",
    "China 's Xinhua news agency said floods in Hunan province had left 2 million homeless .",
    "The Ryder Cup will be held at Valderrama in southern Spain .",
    "Polish Prime Minister Wlodzimierz Cimoszewicz said Warsaw hoped to join NATO by 1999 .",
    ("Philips Electronics NV expects higher earnings in the second half , chief executive Cor Boonstra said in"
     " Eindhoven ."),
    "Lufthansa pilots threatened to strike over pay , the union Vereinigung Cockpit said .",
    "Sporting Lisbon coach Octavio Machado resigned after the 3-0 defeat by Benfica .",
    "The New Zealand dollar fell against its Australian counterpart in Wellington trade .",
    "Nelson Mandela flew to Libya to thank Muammar Gaddafi for his support of the ANC .",
    "Anglo American Corp of South Africa reported a rise in gold output at its Free State mines .",
    "The Palestinian Authority closed the Voice of Palestine radio station in Ramallah .",
    "Lebanon 's Hizbollah guerrillas fired rockets at Israeli positions in the south .",
    "OPEC oil ministers will meet in Vienna on November 27 , the cartel 's secretariat said .",
    "Former Chilean dictator Augusto Pinochet arrived in Santiago after a visit to Britain .",
    "Hungary 's MOL said it would sell a stake in its gas distribution arm to Ruhrgas .",
    "Apple shares slipped in early trading after the company delayed the launch of its new headset in China.",
    "Airbus delivered 62 jets in March, the Toulouse-based planemaker said, while Boeing delivered 41.",
    ("The Bank of Japan kept its policy rate unchanged, and Governor Kazuo Ueda said wages in Osaka and Nagoya"
     " were rising."),
    "Samsung Electronics will build a chip plant in Taylor, Texas, with support from the U.S. Commerce Department.",
    "Lionel Messi scored twice as Inter Miami beat Nashville SC 3-1 in Fort Lauderdale.",
    "Real Madrid confirmed that Kylian Mbappe had joined from Paris Saint-Germain on a five-year contract.",
    "Novak Djokovic beat Carlos Alcaraz in straight sets to win the ATP Finals in Turin.",
    "The Golden State Warriors lost 112-104 to the Denver Nuggets despite 41 points from Stephen Curry.",
    "Greta Thunberg joined protesters outside the Norwegian parliament in Oslo on Monday.",
    "The European Central Bank in Frankfurt raised rates for the tenth time, President Christine Lagarde said.",
    "Volkswagen recalled 140,000 ID.4 electric cars in North America over a faulty door handle.",
    "Kenyan runner Faith Kipyegon broke the mile world record at the Diamond League meeting in Monaco.",
    "NASA and the European Space Agency postponed the launch of the Mars sample return mission.",
    "The Tokyo Stock Exchange said trading in Toshiba shares would end on December 20.",
    "Indian Prime Minister Narendra Modi met Australian Prime Minister Anthony Albanese in Ahmedabad.",
    "Shell and TotalEnergies reported record profits, prompting calls in Westminster for a windfall tax.",
    "The Ukrainian grain deal brokered by Turkey and the United Nations expired in July.",
    "Nvidia overtook Microsoft as the world's most valuable company, according to data from LSEG.",
    "Brazilian President Luiz Inacio Lula da Silva hosted the BRICS summit in Rio de Janeiro.",
    "The Federal Aviation Administration grounded some Boeing 737 MAX 9 jets after a panel blew out over Portland.",
    "Arsenal 2 Tottenham 2 ; Liverpool 4 Brentford 1 ; Newcastle United 0 Aston Villa 1 .",
    "Dortmund's Jadon Sancho returned to Manchester United after a loan spell in Germany.",
    "The Louvre in Paris closed for a day after staff protested over overcrowding.",
    "Pfizer and BioNTech asked the U.S. Food and Drug Administration to approve an updated vaccine.",
    "Hurricane Milton made landfall near Sarasota, Florida, as a Category 3 storm.",
    "Chinese carmaker BYD opened its first European factory in Szeged, Hungary.",
    "The Oscar for best picture went to Oppenheimer, directed by Christopher Nolan.",
    "Swiss bank UBS completed its takeover of Credit Suisse in Zurich on Monday.",
    "Moody's cut Israel's credit rating, citing the war in Gaza.",
    "The International Monetary Fund approved a $3 billion loan for Pakistan.",
    "Springboks captain Siya Kolisi lifted the Webb Ellis Cup at the Stade de France.",
    "Taylor Swift's Eras Tour added three more nights at Wembley Stadium in London.",
    "Amazon Web Services announced a new data centre region in Auckland, New Zealand.",
    "Czech President Petr Pavel visited Kyiv with Slovak Prime Minister Robert Fico.",
    "The Mercedes driver Lewis Hamilton will join Ferrari next season, the Italian team said in Maranello.",
    "Alphabet's Google agreed to pay $700 million to settle claims brought by U.S. states.",
    "German Foreign Minister Annalena Baerbock met her Saudi counterpart in Riyadh.",
    "Sydney Swans beat Collingwood by 18 points at the SCG on Saturday night.",
    "Toyota Motor Corp raised its full-year forecast as demand for hybrids grew in Europe.",
    "The World Meteorological Organization said 2023 was the hottest year on record.",
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
