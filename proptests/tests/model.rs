//! The model-based test: random sequences of operations run through the reference model and the
//! real server (see `keyward_proptests::model` and `keyward_proptests::sut`), checked after every
//! step. Each case also picks the principal client 1 starts as (`CLIENT1_STARTS`: a registered
//! reader, signer or owner, or `local` like client 0). 256 cases by default; set `PROPTEST_CASES`
//! for more.

use keyward_proptests::model::{
    CLIENT1_STARTS, CLIENTS, Call, CreateKind, Form, Garbage, Model, Op, PASSWORDS, PRINCIPALS, Tamper, TokenMethod,
    TokenSel,
};
use keyward_proptests::sut::Sut;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, FileFailurePersistence};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

/// Cases run when `PROPTEST_CASES` is not set: the CI value.
const CI_CASES: u32 = 256;

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(CI_CASES);
    Config {
        cases,
        max_shrink_iters: 4096,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..Config::default()
    }
}

/// What the current model state makes interesting: random ops alone rarely open a wallet they
/// created, or use the token they got. Ops stay valid in every state (the model predicts failures),
/// so shrinking may drop any of them.
#[derive(Debug, Clone)]
struct Ctx {
    /// Clients whose latest session is live and belongs to the principal they speak as.
    live_clients: Vec<u8>,
    /// `name` params of stored wallets.
    names: Vec<u8>,
    /// Passwords of stored wallets.
    passwords: Vec<u8>,
    /// `name` and a wrong password of a stored wallet: repeated, they make the unlock throttle
    /// count and wait (per principal), which random passwords alone rarely do.
    guesses: Vec<(u8, u8)>,
    /// `TokenSel::Issued` arguments that pick a current token (of any principal).
    current: Vec<u8>,
    /// The same, per client: current tokens of the principal it speaks as.
    own_current: Vec<Vec<u8>>,
}

impl Ctx {
    fn of(model: &Model) -> Self {
        let live_clients = (0..CLIENTS as u8)
            .filter(|c| {
                let client = &model.clients[usize::from(*c)];
                client.session.and_then(|s| model.sessions.get(&s)).is_some_and(|s| s.principal == client.principal)
            })
            .collect();
        let names = model.wallets.keys().map(|(_, name)| *name).collect();
        let passwords = model.wallets.values().map(|w| w.password).collect();
        let guesses = model
            .wallets
            .iter()
            .flat_map(|((_, name), w)| (0..PASSWORDS.len() as u8).filter(|pw| *pw != w.password).map(|pw| (*name, pw)))
            .collect();
        let n = model.tokens.len();
        let back = |t: &u32| u8::try_from(n - 1 - *t as usize).ok();
        let current = model.current_tokens().iter().filter_map(back).collect();
        let own_current = model
            .clients
            .iter()
            .map(|client| {
                let own = |t: &&u32| model.tokens[**t as usize].principal == client.principal;
                model.current_tokens().iter().filter(own).filter_map(back).collect()
            })
            .collect();
        Self { live_clients, names, passwords, guesses, current, own_current }
    }
}

fn likely(values: &[u8], fallback: std::ops::Range<u8>) -> BoxedStrategy<u8> {
    if values.is_empty() { fallback.boxed() } else { prop_oneof![3 => select(values.to_vec()), 1 => fallback].boxed() }
}

fn name_in(ctx: &Ctx) -> BoxedStrategy<u8> {
    let any = prop_oneof![4 => Just(0u8), 3 => Just(1), 1 => Just(2), 1 => Just(3)];
    if ctx.names.is_empty() { any.boxed() } else { prop_oneof![3 => select(ctx.names.clone()), 1 => any].boxed() }
}

fn password_in(ctx: &Ctx) -> BoxedStrategy<u8> {
    let any = prop_oneof![4 => Just(0u8), 2 => Just(1), 1 => Just(2), 1 => Just(3)];
    if ctx.passwords.is_empty() {
        any.boxed()
    } else {
        prop_oneof![3 => select(ctx.passwords.clone()), 1 => any].boxed()
    }
}

fn client_in(ctx: &Ctx) -> BoxedStrategy<u8> {
    likely(&ctx.live_clients, 0..3)
}

fn create_kind() -> impl Strategy<Value = CreateKind> {
    prop_oneof![
        5 => (0..3u8).prop_map(CreateKind::Random),
        2 => any::<bool>().prop_map(|zero_len| CreateKind::Restore { zero_len }),
        1 => Just(CreateKind::BadLength),
        1 => Just(CreateKind::BadMnemonic),
    ]
}

fn token_method() -> impl Strategy<Value = TokenMethod> {
    prop_oneof![
        3 => Just(TokenMethod::Accounts),
        2 => (0..3u8).prop_map(TokenMethod::CreateAccount),
        1 => (0..3u8).prop_map(TokenMethod::SetActive),
        2 => (0..3u8).prop_map(TokenMethod::PublicKey),
        1 => (0..3u8).prop_map(TokenMethod::Sign),
    ]
}

/// A token for client `c` (`None`: a client not known yet): mostly its own principal's current
/// ones, sometimes any principal's.
fn token(ctx: &Ctx, c: Option<u8>) -> BoxedStrategy<TokenSel> {
    let own = c.map_or(&ctx.current, |c| &ctx.own_current[usize::from(c)]);
    let issued = if own.is_empty() { 4 } else { 16 };
    prop_oneof![
        issued => likely(own, 0..3).prop_map(TokenSel::Issued),
        2 => likely(&ctx.current, 0..3).prop_map(TokenSel::Issued),
        1 => (0..3u8).prop_map(TokenSel::Upper),
        1 => (0..3u8).prop_map(TokenSel::Flipped),
        1 => Just(TokenSel::Wrong),
        1 => Just(TokenSel::Null),
        1 => Just(TokenSel::Missing),
        1 => Just(TokenSel::Malformed),
        1 => Just(TokenSel::Number),
    ]
    .boxed()
}

fn call(ctx: &Ctx, c: Option<u8>) -> BoxedStrategy<Call> {
    let (name, password) = (|| name_in(ctx), || password_in(ctx));
    let guess = if ctx.guesses.is_empty() { (name(), password()).boxed() } else { select(ctx.guesses.clone()).boxed() };
    prop_oneof![
        2 => prop_oneof![5 => Just(false), 1 => Just(true)].prop_map(|bad_key| Call::Reinit { bad_key }),
        1 => Just(Call::TopDir),
        1 => (0..5u8).prop_map(Call::SetDir),
        1 => any::<bool>().prop_map(|valid| Call::CreateConfig { valid }),
        5 => (name(), create_kind(), password()).prop_map(|(name, kind, pw)| Call::Create { name, kind, pw }),
        1 => (name(), any::<bool>()).prop_map(|(name, right_pw)| Call::ImportGrin { name, right_pw }),
        6 => (name(), password()).prop_map(|(name, pw)| Call::Open { name, pw }),
        3 => guess.prop_map(|(name, pw)| Call::Open { name, pw }),
        2 => name().prop_map(|name| Call::Close { name }),
        1 => (name(), password()).prop_map(|(name, pw)| Call::Mnemonic { name, pw }),
        2 => (name(), password(), password()).prop_map(|(name, old, new)| Call::ChangePassword { name, old, new }),
        2 => (name(), password()).prop_map(|(name, pw)| Call::Delete { name, pw }),
        1 => Just(Call::ListWallets),
        10 => (token_method(), token(ctx, c)).prop_map(|(method, token)| Call::Token { method, token }),
        1 => (0..6u8).prop_map(Call::Raw),
    ]
    .boxed()
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        any::<u16>().prop_map(Tamper::FlipCipher),
        (any::<bool>(), any::<u16>()).prop_map(|(short, n)| Tamper::TruncateCipher { short, n }),
        any::<u8>().prop_map(Tamper::FlipNonce),
        Just(Tamper::ShortNonce),
        Just(Tamper::BadBase64),
        any::<u16>().prop_map(Tamper::TruncateBody),
    ]
}

fn garbage() -> impl Strategy<Value = Garbage> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Garbage::Bytes),
        Just(Garbage::NotJson),
        Just(Garbage::Array),
        Just(Garbage::NoMethod),
        Just(Garbage::PlainCall),
        (0..64u16).prop_map(|len| Garbage::RandomEnvelope { len }),
    ]
}

fn advance() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 1..50u64,
        1 => 990..1_010u64,
        1 => 3_995..4_002u64,
        1 => 5_995..6_002u64,
        1 => 14_995..15_002u64,
        1 => 24_995..25_002u64,
    ]
}

fn form() -> impl Strategy<Value = Form> {
    prop_oneof![8 => Just(Form::Named), 1 => Just(Form::Positional), 1 => Just(Form::UpperNonce)]
}

fn op(ctx: &Ctx) -> BoxedStrategy<Op> {
    let own_call = {
        let ctx = ctx.clone();
        client_in(&ctx).prop_flat_map(move |c| (Just(c), call(&ctx, Some(c)), form()))
    };
    let (client, call, password) = (|| client_in(ctx), || call(ctx, None), || password_in(ctx));
    prop_oneof![
        5 => (0..3u8, prop_oneof![9 => Just(false), 1 => Just(true)]).prop_map(|(c, bad_key)| Op::Init { c, bad_key }),
        24 => own_call.prop_map(|(c, call, form)| Op::Call { c, call, form }),
        3 => (client(), call(), tamper(), any::<bool>())
            .prop_map(|(c, call, how, then_original)| Op::Tamper { c, call, how, then_original }),
        2 => (client(), client(), call()).prop_map(|(from, to, call)| Op::CrossSend { from, to, call }),
        3 => (client(), 0..8u8, any::<bool>()).prop_map(|(c, back, hint)| Op::Replay { c, back, hint }),
        1 => (0..3u8, 0..PRINCIPALS.len() as u8).prop_map(|(c, p)| Op::Become { c, p }),
        2 => (client(), 0..3u8, call(), any::<bool>())
            .prop_map(|(from, by, call, hint)| Op::Steal { from, by, call, hint }),
        1 => (client(), 0..3u8, 0..8u8, any::<bool>())
            .prop_map(|(from, by, back, hint)| Op::StealReplay { from, by, back, hint }),
        1 => garbage().prop_map(Op::Garbage),
        4 => advance().prop_map(Op::Advance),
        1 => Just(Op::Timeout),
        1 => client().prop_map(|c| Op::DropSession { c }),
        1 => prop_oneof![4 => Just(None), 1 => Just(Some(Op::Shutdown))].prop_map(|op| op.unwrap_or(Op::Timeout)),
        2 => (0..3u8).prop_map(Op::ArmFailure),
        1 => (0..2u8, 0..2u8, password()).prop_map(|(dir, name, pw)| Op::PlantLegacy { dir, name, pw }),
    ]
    .boxed()
}

/// The reference state machine: the model.
struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        select(CLIENT1_STARTS.to_vec()).prop_map(Model::with_client1).boxed()
    }

    fn transitions(model: &Model) -> BoxedStrategy<Op> {
        op(&Ctx::of(model)).boxed()
    }

    fn apply(state: Model, op: &Op) -> Model {
        state.apply(op)
    }
}

/// The system under test: the real server, checked after every step.
struct Keyward;

impl StateMachineTest for Keyward {
    type SystemUnderTest = Sut;
    type Reference = Reference;

    fn init_test(_: &Model) -> Sut {
        if std::env::var_os("KEYWARD_CASE_LOG").is_some() {
            static CASES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = CASES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            eprintln!("keyward case {n}");
        }
        Sut::new()
    }

    fn apply(mut sut: Sut, model: &Model, _: Op) -> Sut {
        sut.apply(model);
        sut
    }

    fn teardown(_: Sut, model: Model) {
        if std::env::var_os("KEYWARD_STATS").is_some() {
            eprintln!("case end: {} tokens, {} wallets, now {}", model.tokens.len(), model.wallets.len(), model.now);
        }
    }
}

/// With `KEYWARD_STATS=1`, prints what the model test exercised (run with `--nocapture`).
#[test]
fn zz_print_stats() {
    if std::env::var_os("KEYWARD_STATS").is_some() {
        server_follows_the_model();
        for (what, n) in keyward_proptests::sut::stats() {
            eprintln!("{n:>7}  {what}");
        }
    }
}

prop_state_machine! {
    #![proptest_config(config())]

    #[test]
    fn server_follows_the_model(sequential 1..96 => Keyward);
}
