/* Order matters: mosquitto_plugin.h needs the types mosquitto_broker.h declares. */
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
