/**
 * ChatUp's browser client.
 *
 * - `ChatUpProtocol`: joins a room through a dispatcher, subscribes on a
 *   chat worker, resumes and fails over, posts (`say`).
 * - `ChatUp`: a ready chat widget on top of it.
 */
export { ChatUpProtocol } from "./protocol";
export type { ProtocolOptions, ProtocolEvents } from "./protocol";
export { ChatUp } from "./widget/widget";
export type { WidgetOptions } from "./widget/widget";
export { ChatUpError } from "./core/errors";
/** The original ChatUp client's surface, for pages written for it (docs/migration.md). */
export * as compat from "./compat/protocol";
export type { ErrorCode } from "./core/errors";
export type {
  JoinAnswer,
  Message,
  RoomCounts,
  RoomEvent,
  Stats,
  Status,
  TransportName,
  User,
  WorkerRef,
} from "./core/types";
