//! Enums whose variants a test can list: each stands for something the daemon says on the
//! wire (a close code, an error `type`, a stream's last words), and the reference test
//! (`src/reference.rs`) checks that every one of them is documented in `docs/protocol.md`.

/// Declares an enum, as written, plus `every()`: one value of each variant in declaration
/// order, fields at their `Default`. A variant added to the enum is in `every()` at once, so
/// the list cannot drift from the code the way a hand-written one could.
macro_rules! listed {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident
                $( ( $($tty:ty),+ $(,)? ) )?
                $( { $( $(#[$fmeta:meta])* $field:ident : $fty:ty ),+ $(,)? } )?
            ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $(
                $(#[$vmeta])*
                $variant
                $( ( $($tty),+ ) )?
                $( { $( $(#[$fmeta])* $field : $fty ),+ } )?
            ),+
        }

        impl $name {
            /// One value of every variant, in declaration order, fields at their defaults.
            #[cfg(test)]
            pub(crate) fn every() -> Vec<$name> {
                vec![$(
                    $name::$variant
                    $( ( $( <$tty as ::core::default::Default>::default() ),+ ) )?
                    $( { $( $field: <$fty as ::core::default::Default>::default() ),+ } )?
                ),+]
            }
        }
    };
}

pub(crate) use listed;

#[cfg(test)]
mod tests {
    listed! {
        /// Every shape of variant the macro takes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Shapes {
            /// A unit variant.
            Unit,
            /// A tuple variant.
            Tuple(u16, bool),
            /// A struct variant.
            Struct {
                /// A field.
                n: usize,
            },
        }
    }

    #[test]
    fn every_variant_is_listed_in_order_with_default_fields() {
        assert_eq!(
            Shapes::every(),
            [
                Shapes::Unit,
                Shapes::Tuple(0, false),
                Shapes::Struct { n: 0 }
            ]
        );
    }
}
