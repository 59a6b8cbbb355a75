"""Built-in vocabularies: adjectives people use in feedback mapped to SD tokens, and Concept Builder options."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Look:
    """What one feedback adjective means for a prompt: tokens to add, tokens it contradicts, negatives."""

    add: tuple[str, ...]
    #: existing prompt tokens that say the opposite and must go
    conflicts: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()


#: canonical adjective -> Look; keys are the base forms the interpreter reduces comparatives to
LOOKS: dict[str, Look] = {
    "warm": Look(("warm golden light", "warm color palette"), ("cool tones", "cold light", "blue tones", "cold")),
    "cool": Look(("cool blue tones", "cold light"), ("warm golden light", "warm color palette", "warm tones", "warm")),
    "dark": Look(("dark", "low key lighting", "deep shadows"), ("bright", "high key lighting", "well lit")),
    "bright": Look(("bright", "high key lighting", "well lit"), ("dark", "low key lighting", "deep shadows", "dim")),
    "moody": Look(("moody atmosphere", "dramatic shadows", "muted colors"), ("cheerful", "bright")),
    "sharp": Look(("sharp focus", "highly detailed"), ("blurry", "soft focus", "out of focus"), ("blurry",)),
    "soft": Look(("soft lighting", "soft focus", "gentle"), ("harsh light", "sharp focus")),
    "vibrant": Look(("vibrant colors", "saturated"), ("muted colors", "desaturated"), ("dull colors",)),
    "muted": Look(("muted colors", "desaturated palette"), ("vibrant colors", "saturated")),
    "detailed": Look(("highly detailed", "intricate details"), ("simple", "minimalist"), ("lowres",)),
    "simple": Look(("minimalist", "simple composition", "clean background"), ("intricate details", "cluttered")),
    "realistic": Look(("photorealistic", "realistic", "natural skin texture"), ("cartoon", "anime", "illustration")),
    "cinematic": Look(("cinematic lighting", "film still", "anamorphic")),
    "dramatic": Look(("dramatic lighting", "high contrast", "dynamic composition")),
    "dreamy": Look(("dreamy", "ethereal glow", "soft haze")),
    "cheerful": Look(("cheerful", "bright colors", "sunny"), ("gloomy", "moody atmosphere", "dark")),
    "scary": Look(("eerie", "ominous atmosphere", "horror"), ("cheerful", "cute")),
    "calm": Look(("calm", "serene", "peaceful atmosphere"), ("chaotic", "dynamic")),
    "busy": Look(("bustling", "lots of detail", "crowded scene"), ("minimalist", "empty")),
    "gritty": Look(("gritty", "film grain", "rough textures"), ("clean", "polished")),
    "foggy": Look(("fog", "misty atmosphere"), ("clear sky",)),
    "sunny": Look(("sunny", "bright sunlight", "clear sky"), ("overcast", "rain", "fog")),
    "epic": Look(("epic scale", "grand vista", "dramatic lighting")),
    "cute": Look(("cute", "adorable", "soft pastel colors"), ("scary", "eerie")),
    "elegant": Look(("elegant", "refined", "graceful composition")),
    "abstract": Look(("abstract", "geometric shapes", "bold shapes"), ("photorealistic",)),
    "colorful": Look(("colorful", "vibrant colors"), ("monochrome", "black and white", "muted colors")),
    "old": Look(("vintage", "aged", "weathered"), ("modern", "new")),
    "modern": Look(("modern", "sleek", "contemporary"), ("vintage", "old")),
    "close": Look(("close-up shot", "shallow depth of field"), ("wide shot", "wide angle")),
    "wide": Look(("wide shot", "wide angle", "expansive view"), ("close-up shot", "close-up")),
    "contrasty": Look(("high contrast", "deep blacks"), ("low contrast", "flat lighting")),
    "glossy": Look(("glossy", "reflective surfaces")),
    "rainy": Look(("rain", "wet reflective streets", "overcast"), ("sunny", "clear sky")),
    "snowy": Look(("snow", "winter", "frost"), ("summer",)),
    "cozy": Look(("cozy", "warm ambient light", "intimate atmosphere"), ("cold light", "empty")),
    "magical": Look(("magical atmosphere", "glowing particles", "fantasy"), ("mundane",)),
}

#: the ways people say the adjectives above (comparatives, synonyms) -> canonical key
ADJECTIVES: dict[str, str] = {
    "warm": "warm", "warmer": "warm",
    "cool": "cool", "cooler": "cool", "cold": "cool", "colder": "cool", "bluer": "cool",
    "dark": "dark", "darker": "dark", "dim": "dark", "dimmer": "dark",
    "bright": "bright", "brighter": "bright", "lighter": "bright",
    "moody": "moody", "moodier": "moody", "gloomy": "moody", "gloomier": "moody", "atmospheric": "moody",
    "sharp": "sharp", "sharper": "sharp", "crisp": "sharp", "crisper": "sharp", "clearer": "sharp", "focused": "sharp",
    "soft": "soft", "softer": "soft", "gentler": "soft",
    "vibrant": "vibrant", "saturated": "vibrant", "punchy": "vibrant", "punchier": "vibrant", "vivid": "vibrant",
    "muted": "muted", "desaturated": "muted", "duller": "muted", "pastel": "muted",
    "detailed": "detailed", "intricate": "detailed",
    "simple": "simple", "simpler": "simple", "cleaner": "simple", "minimal": "simple", "minimalist": "simple",
    "realistic": "realistic", "photorealistic": "realistic", "lifelike": "realistic", "photographic": "realistic",
    "cinematic": "cinematic", "filmic": "cinematic",
    "dramatic": "dramatic", "intense": "dramatic",
    "dreamy": "dreamy", "dreamier": "dreamy", "ethereal": "dreamy", "magical": "magical", "mystical": "magical",
    "cozy": "cozy", "cozier": "cozy", "cosy": "cozy", "cosier": "cozy", "homier": "cozy",
    "cheerful": "cheerful", "happier": "cheerful", "happy": "cheerful", "joyful": "cheerful",
    "scary": "scary", "scarier": "scary", "creepy": "scary", "creepier": "scary", "spooky": "scary",
    "spookier": "scary", "eerie": "scary", "eerier": "scary", "darker mood": "scary",
    "calm": "calm", "calmer": "calm", "serene": "calm", "peaceful": "calm", "quieter": "calm",
    "busy": "busy", "busier": "busy", "livelier": "busy", "lively": "busy",
    "gritty": "gritty", "grittier": "gritty", "grungy": "gritty", "grungier": "gritty",
    "foggy": "foggy", "foggier": "foggy", "misty": "foggy", "mistier": "foggy", "hazy": "foggy",
    "sunny": "sunny", "sunnier": "sunny",
    "epic": "epic", "grander": "epic", "grand": "epic",
    "cute": "cute", "cuter": "cute", "adorable": "cute",
    "elegant": "elegant", "classier": "elegant", "classy": "elegant",
    "abstract": "abstract",
    "colorful": "colorful", "colourful": "colorful",
    "older": "old", "vintage": "old", "retro": "old", "aged": "old",
    "modern": "modern", "newer": "modern", "futuristic": "modern",
    "closer": "close", "tighter": "close",
    "wider": "wide", "zoomed out": "wide",
    "contrasty": "contrasty", "contrastier": "contrasty",
    "shinier": "glossy", "shiny": "glossy", "glossy": "glossy",
    "rainy": "rainy", "rainier": "rainy", "wetter": "rainy",
    "snowy": "snowy", "snowier": "snowy", "wintry": "snowy", "wintrier": "snowy",
}  # fmt: skip

#: "less X" / "too X" -> the look that means the opposite
OPPOSITES: dict[str, str] = {
    "warm": "cool", "cool": "warm", "dark": "bright", "bright": "dark", "sharp": "soft", "soft": "sharp",
    "vibrant": "muted", "muted": "vibrant", "detailed": "simple", "simple": "detailed", "busy": "simple",
    "scary": "cheerful", "cheerful": "moody", "moody": "cheerful", "old": "modern", "modern": "old",
    "close": "wide", "wide": "close", "colorful": "muted", "foggy": "sunny", "sunny": "moody",
}  # fmt: skip

#: nouns after an adjective that only say which aspect it is about ("warmer light", "darker tones")
ASPECT_NOUNS = {
    "light", "lighting", "lights", "colors", "colours", "color", "colour", "tones", "tone", "palette", "mood",
    "vibe", "vibes", "feel", "feeling", "atmosphere", "look", "image", "picture", "one", "overall", "shot",
    "it", "everything", "scene",
}  # fmt: skip

#: words that make an "it is a ..." phrase a style rather than a new subject
STYLE_NOUNS = {
    "painting", "photo", "photograph", "sketch", "drawing", "illustration", "render", "anime", "cartoon",
    "watercolor", "watercolour", "oil", "pixel", "comic", "manga", "3d", "cgi", "poster", "lineart", "charcoal",
    "pencil", "engraving", "woodcut", "mosaic", "vector", "claymation", "polaroid", "portrait", "style",
}  # fmt: skip

#: tokens that are quality boilerplate, never the subject
QUALITY_TAGS = {
    "masterpiece", "best quality", "high quality", "highly detailed", "ultra detailed", "8k", "4k", "hdr",
    "absurdres", "score_9", "score_8_up", "score_7_up", "photorealistic", "sharp focus", "intricate details",
}  # fmt: skip

#: Concept Builder fields and good alternatives for each (the rules path of concept_options)
CONCEPT_VOCAB: dict[str, tuple[str, ...]] = {
    "subject": (
        "{s}",
        "a weathered {s}",
        "a tiny {s} in a vast landscape",
        "an ancient {s} overgrown with moss",
        "a futuristic {s}",
        "a {s} seen through a rain-streaked window",
        "a lone {s} at the edge of a cliff",
        "a {s} reflected in still water",
        "a giant {s} towering over a city",
        "a {s} made of glass",
        "a {s} surrounded by wildflowers",
        "a ruined {s} at the end of the world",
    ),
    "style": (
        "cinematic photograph, 35mm film",
        "oil painting, impasto brushstrokes",
        "watercolor illustration, loose washes",
        "studio ghibli inspired anime background",
        "ukiyo-e woodblock print",
        "art nouveau poster",
        "hyperrealistic 3d render, octane",
        "charcoal sketch on textured paper",
        "synthwave digital art",
        "low poly isometric diorama",
        "pixel art, 16-bit",
        "baroque chiaroscuro painting",
    ),
    "composition": (
        "wide establishing shot",
        "extreme close-up",
        "rule of thirds, subject on the left",
        "symmetrical centered composition",
        "low angle looking up",
        "bird's eye view",
        "dutch angle",
        "silhouette against the sky",
        "framed through a doorway",
        "leading lines toward the subject",
        "shallow depth of field, bokeh background",
        "panoramic ultra-wide view",
    ),
    "lighting": (
        "golden hour sunlight",
        "blue hour twilight",
        "neon rim lighting",
        "soft overcast diffused light",
        "harsh midday sun, hard shadows",
        "candlelight, warm flicker",
        "volumetric god rays through fog",
        "moonlight, cold highlights",
        "studio softbox lighting",
        "backlit, glowing edges",
        "bioluminescent glow",
        "stormy lightning flashes",
    ),
    "palette": (
        "warm amber and teal",
        "muted earth tones",
        "pastel pink and mint",
        "monochrome black and white",
        "vibrant complementary orange and blue",
        "deep jewel tones, emerald and sapphire",
        "sepia vintage tones",
        "cyberpunk magenta and cyan",
        "autumn reds and golds",
        "icy whites and pale blues",
        "desaturated film look",
        "high contrast red and black",
    ),
    "mood": (
        "serene and peaceful",
        "ominous and foreboding",
        "nostalgic and wistful",
        "joyful and energetic",
        "melancholic and lonely",
        "mysterious and dreamlike",
        "epic and heroic",
        "cozy and intimate",
        "tense and suspenseful",
        "whimsical and playful",
        "eerie and unsettling",
        "triumphant and hopeful",
    ),
}
