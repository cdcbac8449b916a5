// Runs a Troupe agent through AG-UI's own client (@ag-ui/client's HttpAgent), the way
// an AG-UI frontend does, and prints what the client made of the stream as JSON.
import { HttpAgent } from "@ag-ui/client";

const [url, question] = process.argv.slice(2);
const agent = new HttpAgent({ url });
agent.messages = [{ id: "user-1", role: "user", content: question }];
const seen = [];
const result = await agent.runAgent(
  { runId: crypto.randomUUID() },
  { onEvent: ({ event }) => { seen.push(event.type); } },
);
console.log(
  JSON.stringify({
    types: seen,
    messages: agent.messages,
    state: agent.state,
    newMessages: result.newMessages,
  }),
);
