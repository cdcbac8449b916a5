"""A structured answer: the agent's output_type is an attrs class, the answer is
validated (an invalid one is told to the model, which tries again) and comes back
typed. Offline on a scripted model, or ``--model NAME --base-url URL`` on a server
(asked with OpenAI's response_format json_schema)."""

import attrs
import trio
from models import model, question

from actors import Agent, ScriptedChatModel, ScriptedTurn


@attrs.frozen
class Recipe:
    dish: str
    minutes: int
    ingredients: list[str]


script = [
    ScriptedTurn("Pancakes! Takes about 20 minutes."),  # not JSON: told, asked again
    ScriptedTurn('{"dish": "pancakes", "minutes": 20, "ingredients": ["flour", "milk", "eggs"]}'),
]
agent = Agent(
    model(ScriptedChatModel(script, name="chef_llm")),
    name="Chef",
    system_prompt="You suggest one recipe.",
    output_type=Recipe,
)


async def main() -> None:
    result = await agent.ainvoke(question("Something quick for breakfast?"))
    recipe = result.structured
    assert isinstance(recipe, Recipe)
    print(f"{recipe.dish}: {recipe.minutes} minutes, with {', '.join(recipe.ingredients)}")
    print(f"({result.iterations} model turns)")


trio.run(main)
