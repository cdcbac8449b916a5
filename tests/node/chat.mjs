// The AI SDK 6's Chat as useChat builds it, without React: AbstractChat over a plain
// state object (what @ai-sdk/react's Chat keeps in React state).
import { AbstractChat } from "ai-v6";

class State {
  constructor(messages = []) { this.messages = messages; this.status = "ready"; this.error = undefined; }
  pushMessage(message) { this.messages = [...this.messages, message]; }
  popMessage() { this.messages = this.messages.slice(0, -1); }
  replaceMessage(index, message) {
    this.messages = [...this.messages.slice(0, index), message, ...this.messages.slice(index + 1)];
  }
  snapshot(value) { return structuredClone(value); }
}

export class Chat extends AbstractChat {
  constructor({ messages, ...options }) { super({ ...options, state: new State(messages) }); }
}
