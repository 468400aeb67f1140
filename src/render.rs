//! `render`: files → snapshot → translate → stdout. No Kengine needed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::cli::{RenderArgs, RenderOutput, TranslateArgs};
use crate::providers::addresses;
use crate::providers::files::{self, LoadError};
use crate::sinks::status;
use crate::snapshot::Snapshot;
use crate::translate::{self, Options};

/// Reads the files and returns what `render` prints. Unknown kinds are
/// logged as warnings; invalid objects only show in status.
pub fn render(args: &RenderArgs) -> Result<String, LoadError> {
    let snapshot = load(&args.translate.files)?;
    if let Some(warning) = no_class_of_ours(&snapshot, &args.translate.controller_name) {
        tracing::warn!("{warning}");
    }
    // A fixed time keeps the output reproducible; previous times are kept.
    let options = options(
        &args.translate,
        Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        &snapshot,
    );
    let output = translate::translate(&snapshot, &options);
    Ok(match args.output {
        RenderOutput::Config => output.config().to_json_pretty() + "\n",
        RenderOutput::Status => status::yaml_stream(&status::objects(
            &snapshot,
            &output.status,
            &options.controller_name,
        )),
        RenderOutput::Objects => objects(args, &snapshot, options),
    })
}

/// What the operator would apply, translated as the controller does (each
/// Gateway on its fleet, addresses left to the load balancer) and with the
/// controller's default settings.
fn objects(args: &RenderArgs, snapshot: &Snapshot, options: Options) -> String {
    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        args: crate::cli::ControllerArgs,
    }
    let defaults = <Defaults as clap::Parser>::try_parse_from(["controller"])
        .expect("the controller's flags all have defaults");
    let mut settings = crate::controller::operator_settings(&defaults.args);
    settings.flavor = args.translate.flavor;
    let options = Options {
        fleets: translate::FleetMode::Instances,
        usable_addresses: None,
        ..options
    };
    let output = translate::translate(snapshot, &options);
    status::yaml_stream(&crate::operator::preview::objects(
        snapshot,
        &output.fleets,
        &settings,
    ))
}

pub fn load(paths: &[std::path::PathBuf]) -> Result<Snapshot, LoadError> {
    let loaded = files::load(paths)?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    Ok(Snapshot::from_objects(loaded.objects))
}

/// Says so when no GatewayClass is ours: then nothing is served, and an
/// empty config alone would not tell why.
pub fn no_class_of_ours(snapshot: &Snapshot, controller_name: &str) -> Option<String> {
    let classes: Vec<String> = snapshot
        .gateway_classes
        .iter()
        .map(|(name, class)| format!("{name} ({})", class.spec.controller_name))
        .collect();
    if snapshot
        .gateway_classes
        .values()
        .any(|c| c.spec.controller_name == controller_name)
    {
        return None;
    }
    let seen = if classes.is_empty() {
        "the input has none".to_string()
    } else {
        format!("the input has {}", classes.join(", "))
    };
    Some(format!(
        "no GatewayClass has controllerName {controller_name}, so no Gateway is served; {seen}"
    ))
}

/// Translation options for local use: addresses are probed on this host,
/// since binding one it lacks would make Kengine refuse the whole config.
pub fn options(args: &TranslateArgs, now: Time, snapshot: &Snapshot) -> Options {
    Options {
        controller_name: args.controller_name.clone(),
        flavor: args.flavor,
        now,
        usable_addresses: Some(addresses::usable(snapshot)),
        taken_listens: Default::default(),
        fleets: translate::FleetMode::Local,
        missing_kinds: Default::default(),
        files_dir: args.files_dir.display().to_string(),
    }
}
