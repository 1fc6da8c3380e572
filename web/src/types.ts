// Wire shapes of the API the UI reads (see /docs for the full schema).

export interface Me {
  tenant: string;
  user: string | null;
  groups: string[];
  is_admin: boolean;
  is_reviewer: boolean;
}

export interface Source {
  n: number;
  chunk_id: string;
  doc_id: string;
  title: string;
  source: string;
  page: number | null;
  start_char: number;
  end_char: number;
  snippet: string;
  score: number;
  chunk_ids: string[];
}

export interface Claim {
  sentence: string;
  support: number;
  supported: boolean;
  snippet: string;
  snippet_start: number | null;
  snippet_end: number | null;
}

export interface Citation extends Source {
  inferred: boolean;
  supported: boolean | null;
  support: number | null;
  snippet_start: number | null;
  snippet_end: number | null;
  claims: Claim[];
}

export interface ToolCallInfo {
  id: string;
  name: string;
  arguments: string;
  content?: string;
  is_error?: boolean;
  pending_id?: string;
}

export interface AnswerEvent {
  type: "delta" | "tool_call" | "tool_result" | "tool_pending" | "done" | "error";
  text?: string;
  message?: string;
  code?: string;
  citations?: Citation[];
  sources?: Source[];
  trace_id?: string;
  conversation_id?: string;
  tool_calls?: ToolCallInfo[];
  finish_reason?: string;
}

export interface Turn {
  question: string;
  answer: string;
  citations: Citation[];
  sources: Source[];
  traceId: string | null;
  pending: ToolCallInfo[];
  tools: ToolCallInfo[];
  error: string | null;
  streaming: boolean;
  stopped?: boolean;
}

export interface ConversationSummary {
  id: string;
  title: string;
  created_at: string;
  updated_at: string;
  turn_count: number;
}

export interface PassagePart {
  chunk_id: string;
  offset: number;
  start_char: number;
  end_char: number;
  page: number | null;
}

export interface Passage {
  doc_id: string;
  title: string;
  source: string;
  page: number | null;
  start_char: number;
  end_char: number;
  text: string;
  headings: string[];
  parts: PassagePart[];
}

export interface JobItem {
  document_id: string;
  path: string;
  filename: string;
  state: string;
  error: string | null;
  attempts: number;
}

export interface Job {
  id: string;
  kind: string;
  state: string;
  total: number;
  done: number;
  failed: number;
  skipped: number;
  cancelled: number;
  progress: number;
  created_at: string;
  finished_at: string | null;
  created_by: string | null;
  items: JobItem[];
}

export interface DocumentStatus {
  id: string;
  title: string;
  status: string;
  error: string | null;
  chunk_count: number;
  created_at: string;
  updated_at: string;
}
