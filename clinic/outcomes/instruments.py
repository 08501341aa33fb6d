"""The outcome instruments as data: PHQ-9, GAD-7 and the ASRS v1.1 Symptom Checklist, each item's published wording,
its answer options, score bands and the codes a FHIR export needs (DOMAIN.md §2 and §5.6)."""

from __future__ import annotations

from dataclasses import dataclass

LOINC = "http://loinc.org"


@dataclass(frozen=True)
class Option:
    value: int
    label: str
    loinc: str | None = None  # the LOINC answer code, where LOINC has one


@dataclass(frozen=True)
class Item:
    key: str  # "q1".."q18", "difficulty": form field names, JSON keys and stored keys alike
    text: str
    options: tuple[Option, ...]
    number: int | None = None  # the number printed on the form; None for the unnumbered difficulty question
    scored: bool = True  # the difficulty question is asked but never added to the total
    loinc: str | None = None
    part: str | None = None  # ASRS: "A" (the screener, items 1-6) or "B"
    shaded_from: int | None = None  # ASRS Part A: the lowest answer in the form's shaded (darker) boxes

    @property
    def values(self) -> frozenset[int]:
        return frozenset(o.value for o in self.options)

    def label_of(self, value: int | None) -> str:
        return next((o.label for o in self.options if o.value == value), "")


@dataclass(frozen=True)
class Band:
    low: int
    high: int
    label: str


@dataclass(frozen=True)
class Instrument:
    key: str
    name: str
    short: str
    version: str  # which wording and options this system asks; stored with every answer set
    recall: str
    intro: str
    items: tuple[Item, ...]
    total_max: int
    bands: tuple[Band, ...]
    loinc_panel: str | None
    loinc_total: str | None
    total_display: str
    source: str
    # the recall period is two weeks: worth asking again during induction (the ASRS asks about six months)
    repeat_in_induction: bool
    # response (>= 50 % drop from baseline) and remission (total < 5) are defined for this instrument
    response_and_remission: bool

    @property
    def scored_items(self) -> tuple[Item, ...]:
        return tuple(i for i in self.items if i.scored)

    def item(self, key: str) -> Item | None:
        return next((i for i in self.items if i.key == key), None)


TWO_WEEKS = (
    Option(0, "Not at all", "LA6568-5"),
    Option(1, "Several days", "LA6569-3"),
    Option(2, "More than half the days", "LA6570-1"),
    Option(3, "Nearly every day", "LA6571-9"),
)
DIFFICULTY = (
    Option(0, "Not difficult at all", "LA6572-7"),
    Option(1, "Somewhat difficult", "LA6573-5"),
    Option(2, "Very difficult", "LA6575-0"),
    Option(3, "Extremely difficult", "LA6574-3"),
)
SIX_MONTHS = (Option(0, "Never"), Option(1, "Rarely"), Option(2, "Sometimes"), Option(3, "Often"), Option(4, "Very Often"))
DIFFICULTY_TEXT = ("If you checked off any problems, how difficult have these problems made it for you to do your work, "
                   "take care of things at home, or get along with other people?")
PFIZER = ("Developed by Drs. Robert L. Spitzer, Janet B.W. Williams, Kurt Kroenke and colleagues, with an educational grant "
          "from Pfizer Inc. No permission required to reproduce, translate, display or distribute.")


def _numbered(texts: tuple[tuple[str, str | None], ...], options: tuple[Option, ...]) -> tuple[Item, ...]:
    return tuple(Item(key=f"q{n}", number=n, text=text, options=options, loinc=code) for n, (text, code) in enumerate(texts, start=1))


PHQ9 = Instrument(
    key="phq9",
    name="Patient Health Questionnaire (PHQ-9)",
    short="PHQ-9",
    version="PHQ-9 en-US 1999",
    recall="the last 2 weeks",
    intro="Over the last 2 weeks, how often have you been bothered by any of the following problems?",
    items=_numbered((
        ("Little interest or pleasure in doing things", "44250-9"),
        ("Feeling down, depressed, or hopeless", "44255-8"),
        ("Trouble falling or staying asleep, or sleeping too much", "44259-0"),
        ("Feeling tired or having little energy", "44254-1"),
        ("Poor appetite or overeating", "44251-7"),
        ("Feeling bad about yourself — or that you are a failure or have let yourself or your family down", "44258-2"),
        ("Trouble concentrating on things, such as reading the newspaper or watching television", "44252-5"),
        ("Moving or speaking so slowly that other people could have noticed? Or the opposite — being so fidgety or restless "
         "that you have been moving around a lot more than usual", "44253-3"),
        ("Thoughts that you would be better off dead or of hurting yourself in some way", "44260-8"),
    ), TWO_WEEKS) + (Item(key="difficulty", text=DIFFICULTY_TEXT, options=DIFFICULTY, scored=False, loinc="69722-7"),),
    total_max=27,
    bands=(Band(0, 4, "minimal"), Band(5, 9, "mild"), Band(10, 14, "moderate"), Band(15, 19, "moderately severe"), Band(20, 27, "severe")),
    loinc_panel="44249-1",
    loinc_total="44261-6",
    total_display="Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]",
    source=PFIZER,
    repeat_in_induction=True,
    response_and_remission=True,
)

GAD7 = Instrument(
    key="gad7",
    name="Generalized Anxiety Disorder scale (GAD-7)",
    short="GAD-7",
    version="GAD-7 en-US 2006",
    recall="the last 2 weeks",
    intro="Over the last 2 weeks, how often have you been bothered by the following problems?",
    items=_numbered((
        ("Feeling nervous, anxious or on edge", "69725-0"),
        ("Not being able to stop or control worrying", "68509-9"),
        ("Worrying too much about different things", "69733-4"),
        ("Trouble relaxing", "69734-2"),
        ("Being so restless that it is hard to sit still", "69735-9"),
        ("Becoming easily annoyed or irritable", "69689-8"),
        ("Feeling afraid as if something awful might happen", "69736-7"),
    ), TWO_WEEKS) + (Item(key="difficulty", text=DIFFICULTY_TEXT, options=DIFFICULTY, scored=False, loinc="69722-7"),),
    total_max=21,
    # cut points 5, 10 and 15
    bands=(Band(0, 4, "minimal"), Band(5, 9, "mild"), Band(10, 14, "moderate"), Band(15, 21, "severe")),
    loinc_panel="69737-5",
    loinc_total="70274-6",
    total_display="Generalized anxiety disorder 7 item (GAD-7) total score [Reported.PHQ]",
    source=PFIZER,
    repeat_in_induction=True,
    response_and_remission=True,
)

_ASRS_TEXTS = (
    "How often do you have trouble wrapping up the final details of a project, once the challenging parts have been done?",
    "How often do you have difficulty getting things in order when you have to do a task that requires organization?",
    "How often do you have problems remembering appointments or obligations?",
    "When you have a task that requires a lot of thought, how often do you avoid or delay getting started?",
    "How often do you fidget or squirm with your hands or feet when you have to sit down for a long time?",
    "How often do you feel overly active and compelled to do things, like you were driven by a motor?",
    "How often do you make careless mistakes when you have to work on a boring or difficult project?",
    "How often do you have difficulty keeping your attention when you are doing boring or repetitive work?",
    "How often do you have difficulty concentrating on what people say to you, even when they are speaking to you directly?",
    "How often do you misplace or have difficulty finding things at home or at work?",
    "How often are you distracted by activity or noise around you?",
    "How often do you leave your seat in meetings or other situations in which you are expected to remain seated?",
    "How often do you feel restless or fidgety?",
    "How often do you have difficulty unwinding and relaxing when you have time to yourself?",
    "How often do you find yourself talking too much when you are in social situations?",
    "When you're in a conversation, how often do you find yourself finishing the sentences of the people you are talking to, "
    "before they can finish them themselves?",
    "How often do you have difficulty waiting your turn in situations when turn taking is required?",
    "How often do you interrupt others when they are busy?",
)
# Part A's shaded boxes: items 1-3 from "Sometimes" (2), items 4-6 from "Often" (3)
ASRS_SHADED_FROM = {1: 2, 2: 2, 3: 2, 4: 3, 5: 3, 6: 3}
ASRS_POSITIVE_SCREEN = 4  # four or more Part A answers in the shaded boxes
ASRS_INATTENTIVE = (1, 2, 3, 4, 7, 8, 9, 10, 11)
ASRS_HYPERACTIVE = (5, 6, 12, 13, 14, 15, 16, 17, 18)

ASRS = Instrument(
    key="asrs",
    name="Adult ADHD Self-Report Scale (ASRS v1.1) Symptom Checklist",
    short="ASRS",
    version="ASRS v1.1 en-US",
    recall="the past 6 months",
    intro=("Please answer the questions below, rating yourself on each of the criteria shown using the scale. As you answer each "
           "question, choose the answer that best describes how you have felt and conducted yourself over the past 6 months."),
    items=tuple(
        Item(key=f"q{n}", number=n, text=text, options=SIX_MONTHS, part="A" if n <= 6 else "B", shaded_from=ASRS_SHADED_FROM.get(n))
        for n, text in enumerate(_ASRS_TEXTS, start=1)
    ),
    total_max=72,
    bands=(),  # the checklist publishes no severity bands for its total; Part A's screen is the published cut-off
    loinc_panel=None,
    loinc_total=None,
    total_display="ASRS v1.1 Symptom Checklist total score (items 1-18, 0-72)",
    source=("Adult ADHD Self-Report Scale (ASRS-v1.1) Symptom Checklist, World Health Organization Composite International "
            "Diagnostic Interview; Kessler RC et al., Psychological Medicine 2005;35(2):245-256."),
    repeat_in_induction=False,
    response_and_remission=False,
)

INSTRUMENTS: dict[str, Instrument] = {i.key: i for i in (PHQ9, GAD7, ASRS)}
ORDER = tuple(INSTRUMENTS)  # the order a patient is asked them in: PHQ-9 (with the safety item) first
SAFETY_ITEM = "q9"  # PHQ-9 item 9: thoughts of being better off dead or of self-harm


def instrument(key: str) -> Instrument | None:
    return INSTRUMENTS.get(key)
