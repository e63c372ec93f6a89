/** A buffered request and its answer as the HTTP front's routes see them (server.ts builds and writes them). */

export interface HttpRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: Record<string, string>;
  params: Record<string, string>;
  remote: string;
  body: Buffer;
  /** Parsed JSON body; throws HttpError(400) naming the problem. */
  json<T = unknown>(): T;
  cookie(name: string): string | undefined;
}

export interface HttpReply {
  status: number;
  headers?: Record<string, string | string[]>;
  body?: string | Buffer | object | null;
}

export class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly extra: Record<string, unknown> = {}) { super(message); }
}
