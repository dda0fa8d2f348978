//! The gRPC codec of every ebb service: prost's, with small buffers.
//!
//! tonic gives each call an encode buffer and a decode buffer of 8 KB that
//! live as long as the call. An agent's `Connect` stream lives for days and
//! carries messages of 5 to 150 bytes, so at 10,000 agents those two buffers
//! alone held 160 MB of the controller's memory. Here they start at 1 KB and
//! grow when a message needs more (a large admin answer still works).

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// The initial size of a call's encode and decode buffers.
pub const BUFFER_SIZE: usize = 1024;
/// Encoded messages are flushed once this much is buffered (tonic's default).
pub const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`BUFFER_SIZE`] buffers; named in `build.rs`.
#[derive(Debug, Clone, Copy)]
pub struct SmallCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

impl<T, U> Codec for SmallCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

#[cfg(test)]
mod tests {
    use tonic::codec::{Decoder, Encoder};

    use super::*;
    use crate::v1::{Pull, Sample};

    #[test]
    fn buffers_start_small() {
        // BufferSettings' fields are private; its Debug shows them.
        let mut codec = SmallCodec::<Pull, Sample>::default();
        let want = format!("buffer_size: {BUFFER_SIZE},");
        for settings in [
            codec.encoder().buffer_settings(),
            codec.decoder().buffer_settings(),
        ] {
            assert!(format!("{settings:?}").contains(&want), "{settings:?}");
        }
    }
}
