# What PEFM needs on any cluster, wired once: Knative and Flagger (with the GPU settings of the
# cluster module's contract and the monitoring module's Prometheus), the data namespace and database,
# and monitoring. The examples call it with a cluster module's outputs; providers come from the caller.
module "knative" {
  source = "../knative"

  platform          = var.platform
  domain            = var.domain
  gpu_node_selector = var.gpu_node_selector
  gpu_node_taint    = var.gpu_node_taint
  prometheus_url    = module.monitoring.prometheus_url

  nvidia_runtime_handler       = var.nvidia_runtime_handler
  install_nvidia_device_plugin = var.install_nvidia_device_plugin
}

module "data" {
  source = "../data"

  managed_database_url     = var.managed_database_url
  mlflow_backend_store_uri = var.mlflow_backend_store_uri
  storage_class            = var.storage_class
  database_instances       = var.database_instances
  database_storage_size    = var.database_storage_size
  database_backup          = var.database_backup
  registry_username        = var.registry_username
  registry_token           = var.registry_token
  previous_verify_keys     = var.previous_verify_keys
  deploy_cache             = var.deploy_cache
}

module "monitoring" {
  source = "../monitoring"

  app_namespace = module.data.namespace
  storage_class = var.storage_class
}
