//! The buffers a worker thread keeps from one connection to the next (the client read buffer,
//! the request head, the exchange's output and backend buffers), so that once a worker has
//! served a few connections, serving a request allocates nothing. Thread-local: each worker
//! lends its own set to the connection it serves; nothing is shared.

use crate::exchange::ExchangeBuffers;
use crate::http::head::RequestHead;
use std::cell::RefCell;

/// What a worker thread keeps from one connection to the next, so that serving a request
/// allocates nothing once the worker has served a few.
pub struct WorkerBuffers {
    pub read: Box<[u8]>,
    /// The request head, refilled for each request.
    pub head: RequestHead,
    pub exchange: ExchangeBuffers,
}

thread_local! {
    /// The buffers of this worker thread, lent to the connection it serves.
    static WORKER_BUFFERS: RefCell<Option<WorkerBuffers>> = const { RefCell::new(None) };
}

pub fn take_buffers(read_capacity: usize) -> WorkerBuffers {
    match WORKER_BUFFERS.with(|b| b.borrow_mut().take()) {
        Some(buffers) if buffers.read.len() == read_capacity => buffers,
        _ => WorkerBuffers {
            read: vec![0; read_capacity].into_boxed_slice(),
            head: RequestHead::default(),
            exchange: ExchangeBuffers::default(),
        },
    }
}

pub fn return_buffers(buffers: WorkerBuffers) {
    WORKER_BUFFERS.with(|b| *b.borrow_mut() = Some(buffers));
}
